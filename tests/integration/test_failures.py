"""Working off the quarantine through the real CLI (`cdc-recon failures ...` subprocesses)
and the monitoring API, on the real Kafka and PostgreSQL.

The service quarantines messages for real: one of a table the config does not map, one
whose row a target CHECK rejects, one that is not JSON. The tests fix the causes (add the
mapping, drop the CHECK), retry, and check the rows, the ledger and the failure rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import yaml

from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.config import load_settings
from cdc_recon.monitor.api import Api, Request
from cdc_recon.monitor.figures import control_figures
from cdc_recon.monitor.jobs import ReplayJobs
from cdc_recon.monitor.poller import PollResult
from cdc_recon.pg.engine import create_engine
from tests.conftest import Database, Services
from tests.integration.events import ChangeLog, send
from tests.integration.test_service import Deployment, Target, deploy  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

POISON = b"\xff\xfenot json"


class FakePoller:
    """The status poller is not what these tests look at."""

    def latest(self) -> PollResult:
        return PollResult(None, "down", None, 0.0)


@dataclass
class Quarantined:
    """A deployment whose service quarantined three messages, by reason."""

    deployment: Deployment
    target: Target
    db: Database
    topic: str
    ids: dict[str, int]  # reason -> failure id
    offsets: dict[str, int]  # reason -> Kafka offset

    def cli(self, *args: str, code: int | None = 0) -> Any:
        """Run `cdc-recon ARGS`; JSON output parsed when `--json` is among them."""
        done = self.deployment.run(*args)
        if code is not None:
            assert done.process.returncode == code, (args, done.stdout, done.stderr)
        return json.loads(done.stdout) if "--json" in args else done

    def failures(self, *args: str) -> list[dict[str, Any]]:
        return list(self.cli("failures", "list", "--json", *args)["items"])

    def row(self, failure_id: int) -> dict[str, Any]:
        with self.db.engine.connect() as conn:
            found = conn.execute(
                sa.text(f'SELECT * FROM "{self.db.schema}".failures WHERE id = :id'),
                {"id": failure_id},
            )
            return dict(found.mappings().one())

    def ledger(self, offset: int) -> list[tuple[Any, ...]]:
        with self.db.engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    f'SELECT topic, kafka_partition, kafka_offset, outcome FROM "{self.db.schema}"'
                    ".ledger WHERE topic = :t AND kafka_offset = :o"
                ),
                {"t": self.topic, "o": offset},
            )
            return [tuple(r) for r in found]

    def orders(self) -> dict[int, int]:
        with self.db.engine.connect() as conn:
            found = conn.execute(sa.text(f"SELECT id, total FROM {self.db.table('orders')}"))
            return {row[0]: row[1] for row in found}

    def map_orders(self) -> None:
        config = self.deployment.config
        config["tables"].append(
            {"source": "public.orders", "target": f"{self.db.schema}.orders", "key": ["id"]}
        )
        self.deployment.path.write_text(yaml.safe_dump(config))

    def sql(self, statement: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(sa.text(statement))


@pytest.fixture
def quarantined(deploy: Callable[..., Deployment], target_db: Database) -> Quarantined:  # noqa: F811
    """Customers 1 and 2 applied; customer 3 rejected by a CHECK; customer 2 rejected at
    first, then a newer change of it applied; an order unmapped; a message not JSON."""
    deployment = deploy()
    customers_table = target_db.table("customers")
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(f"ALTER TABLE {customers_table} ADD CONSTRAINT no_bad CHECK (email <> 'bad')")
        )
        conn.execute(
            sa.text(f"CREATE TABLE {target_db.table('orders')} (id int PRIMARY KEY, total int)")
        )
    customers, orders = ChangeLog(), ChangeLog(table="orders")
    messages = [
        customers.insert({"id": 1, "name": "ada", "email": "a@x"}),  # 0
        customers.insert({"id": 2, "name": "bob", "email": "bad"}),  # 1 rejected, older
        customers.update({"id": 2, "name": "bob2", "email": "b@x"}),  # 2 applied, newer
        customers.insert({"id": 3, "name": "cy", "email": "bad"}),  # 3 rejected
        orders.insert({"id": 7, "total": 70}),  # 4 unmapped
        (b'{"id":9}', POISON),  # 5 undecodable
    ]
    topic = deployment.config["topics"][0]
    # Customer 2's bad change alone in a batch, or the newer one would fold it away.
    for part in (messages[:2], messages[2:]):
        send(deployment.services.kafka_bootstrap, topic, part)
        run = deployment.run("run", "--until-idle", "1")
        assert run.process.returncode == 0, run.stderr
    with target_db.engine.connect() as conn:
        found = conn.execute(
            sa.text(
                f'SELECT kafka_offset, id, reason FROM "{target_db.schema}".failures '
                "ORDER BY kafka_offset"
            )
        ).all()
    assert [(o, r) for o, _, r in found] == [
        (1, "rejected"),
        (3, "rejected"),
        (4, "unmapped"),
        (5, "undecodable"),
    ]
    ids = {"old": found[0][1], "rejected": found[1][1], "unmapped": found[2][1]}
    ids["undecodable"] = found[3][1]
    offsets = {"old": 1, "rejected": 3, "unmapped": 4, "undecodable": 5}
    return Quarantined(deployment, Target(target_db), target_db, topic, ids, offsets)


def test_list_filters_and_show(quarantined: Quarantined) -> None:
    q = quarantined
    everything = q.failures()
    assert sorted(f["id"] for f in everything) == sorted(q.ids.values())
    assert {f["id"] for f in q.failures("--reason", "rejected")} == {
        q.ids["old"],
        q.ids["rejected"],
    }
    assert [f["id"] for f in q.failures("--table", "public.orders")] == [q.ids["unmapped"]]
    assert len(q.failures("--topic", q.topic)) == 4 and q.failures("--topic", "nope") == []
    assert len(q.failures("--since", "-1h")) == 4 and q.failures("--until", "-1h") == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert q.failures("--since", later) == []
    assert len(q.failures("--reason", "rejected", "--limit", "1")) == 1
    assert q.failures("--status", "resolved") == []
    table = q.deployment.run("failures", "list", "--reason", "unmapped", COLUMNS="250").stdout
    assert "1 failure(s)" in table and "public.orders" in table and f"{q.topic}" in table

    shown = q.cli("failures", "show", str(q.ids["rejected"]), "--json")
    assert (shown["topic"], shown["kafka_partition"], shown["kafka_offset"]) == (q.topic, 0, 3)
    assert shown["reason"] == "rejected" and "no_bad" in shown["detail"]
    assert shown["event"]["after"] == {"id": 3, "name": "cy", "email": "bad"}
    assert shown["dead_letter"] in ("sent", "pending") and shown["status"] == "open"
    raw = q.cli("failures", "show", str(q.ids["undecodable"]), "--json")
    assert raw["event"] is None and raw["decode_error"]
    assert raw["raw_value"]["text"] == "\\xff\\xfenot json" and raw["raw_value"]["bytes"] == 10
    text = q.cli("failures", "show", str(q.ids["undecodable"])).stdout
    assert "\\xff\\xfenot json" in text and "undecodable" in text

    missing = q.cli("failures", "show", "999999", code=2)
    assert missing.stderr.strip().startswith("cdc-recon: error: no failure 999999")
    bad_time = q.cli("failures", "list", "--since", "yesterday", code=2)
    assert bad_time.stderr.count("\n") == 1 and "invalid time 'yesterday'" in bad_time.stderr


def test_retry_after_the_cause_is_fixed(quarantined: Quarantined) -> None:
    q = quarantined
    refused = q.cli("failures", "retry", code=2)
    assert "name the failures to retry" in refused.stderr

    still = q.cli("failures", "retry", "--all", "--json", code=1)
    # The older change of customer 2 never reaches the CHECK: the position guard drops it.
    assert (still["read"], still["failed"], still["superseded"], still["applied"]) == (4, 3, 1, 0)
    assert q.target.rows()[2] == (2, "bob2", "b@x")
    unmapped = q.row(q.ids["unmapped"])
    assert (unmapped["status"], unmapped["reason"], unmapped["attempts"]) == ("open", "unmapped", 1)

    q.map_orders()
    q.sql(f"ALTER TABLE {q.db.table('customers')} DROP CONSTRAINT no_bad")
    dry = q.cli("failures", "retry", "--all", "--dry-run", "--json")
    assert (dry["dry_run"], dry["read"], dry["applied"], dry["failed"]) == (True, 3, 2, 1), dry
    assert q.row(q.ids["rejected"])["status"] == "open" and 3 not in q.target.rows()

    done = q.cli("failures", "retry", "--all", "--chunk", "2", "--json", code=1)  # 2 chunks
    assert (done["read"], done["applied"], done["duplicates"], done["failed"]) == (3, 2, 0, 1)
    assert [f["id"] for f in done["failing"]] == [q.ids["undecodable"]]
    assert q.target.rows() == {1: (1, "ada", "a@x"), 2: (2, "bob2", "b@x"), 3: (3, "cy", "bad")}
    assert q.orders() == {7: 70}, "the newly mapped table got its row"
    for name, outcome, attempts in (
        ("rejected", "applied", 2),
        ("unmapped", "applied", 2),
        ("old", "superseded", 1),
    ):
        row = q.row(q.ids[name])
        assert (row["status"], row["retry_outcome"], row["attempts"]) == (
            "retried",
            outcome,
            attempts,
        ), name
        assert row["retried_at"] is not None
        assert q.ledger(q.offsets[name]) == [(q.topic, 0, q.offsets[name], outcome)]
    poison = q.row(q.ids["undecodable"])
    assert (poison["status"], poison["reason"], poison["attempts"]) == ("open", "undecodable", 2)
    assert [f["id"] for f in q.failures()] == [q.ids["undecodable"]]

    again = q.cli("failures", "retry", str(q.ids["rejected"]), "--json")
    assert (again["read"], again["duplicates"], again["applied"]) == (1, 1, 0), again
    assert q.row(q.ids["rejected"])["retry_outcome"] == "duplicate"
    assert q.ledger(q.offsets["rejected"]) == [(q.topic, 0, 3, "applied")], "in the ledger once"
    assert q.target.ledger() == 5


def test_a_retried_old_change_never_overwrites_a_newer_row(quarantined: Quarantined) -> None:
    q = quarantined
    q.sql(f"ALTER TABLE {q.db.table('customers')} DROP CONSTRAINT no_bad")
    done = q.cli("failures", "retry", str(q.ids["old"]), "--json")
    assert (done["superseded"], done["applied"]) == (1, 0), done
    assert q.target.rows()[2] == (2, "bob2", "b@x")


def test_resolve_closes_without_applying(quarantined: Quarantined) -> None:
    q = quarantined
    no_note = q.cli("failures", "resolve", str(q.ids["rejected"]), code=2)
    assert "--note" in no_note.stderr
    done = q.cli("failures", "resolve", str(q.ids["rejected"]), "--note", "test data", "--json")
    assert done == {"resolved": [q.ids["rejected"]], "not_open": {}}
    row = q.row(q.ids["rejected"])
    assert (row["status"], row["note"]) == ("resolved", "test data")
    assert row["resolved_at"] is not None
    assert 3 not in q.target.rows()
    twice = q.cli("failures", "resolve", str(q.ids["rejected"]), "--note", "x", "--json")
    assert twice == {"resolved": [], "not_open": {str(q.ids["rejected"]): "resolved"}}
    assert q.row(q.ids["rejected"])["note"] == "test data"
    assert q.ids["rejected"] not in {f["id"] for f in q.failures()}
    assert [f["id"] for f in q.failures("--status", "resolved")] == [q.ids["rejected"]]

    q.sql(f"ALTER TABLE {q.db.table('customers')} DROP CONSTRAINT no_bad")
    skipped = q.cli("failures", "retry", str(q.ids["rejected"]), "--json")
    assert skipped["read"] == 0 and 3 not in q.target.rows(), "a resolved failure stays closed"
    unknown = q.cli("failures", "resolve", "999999", "--note", "x", code=2)
    assert "no failure 999999" in unknown.stderr

    status = q.cli("status", "--json")
    assert status["failures"]["rejected"] == {"open": 1, "resolved": 1}


def test_resolved_and_retried_failures_stop_counting_as_missed(quarantined: Quarantined) -> None:
    q = quarantined
    config = q.deployment.config
    config["sweeper"] = {"adapter": "kafka_topic", "grace": 0}
    q.deployment.path.write_text(yaml.safe_dump(config))

    def sweep(*extra: str) -> Any:
        return q.cli("sweep", "--from", "-1h", "--to", "now", "--json", *extra)

    def missed_counts() -> dict[str, int]:
        return control_figures(q.db.engine, q.db.schema, config["group_id"]).missed

    first = set(sweep("--no-replay")["missed_ids"])
    poison = f"kafka:{q.topic}:0:5"
    assert poison in first and len(first) == 3, first  # customer 2's older change: superseded
    assert missed_counts() == {"pending": 3}
    q.cli("failures", "resolve", str(q.ids["undecodable"]), "--note", "garbage")
    q.cli("failures", "resolve", str(q.ids["rejected"]), "--note", "customer 3 was a test")
    q.map_orders()
    q.cli("failures", "retry", str(q.ids["unmapped"]))
    assert missed_counts() == {}, "every missed change left is a closed failure"

    # The cause of the resolved one goes away: the sweeper still must not apply it.
    q.sql(f"ALTER TABLE {q.db.table('customers')} DROP CONSTRAINT no_bad")
    again = sweep()
    assert again["missed_ids"] == [] and again["replayed"] == 0, again
    assert 3 not in q.target.rows(), "a resolved failure stays unapplied"
    assert q.orders() == {7: 70}


def test_the_api_agrees_with_the_cli(quarantined: Quarantined, services: Services) -> None:
    q = quarantined
    settings = load_settings(
        q.deployment.path,
        target_url=services.target_url,
        kafka_bootstrap=services.kafka_bootstrap,
        monitoring={"token": "s3cret", "host": "0.0.0.0"},
    )
    engine = create_engine(services.target_url, name="target")
    api = Api(settings, ServiceMonitor(), FakePoller(), engine, ReplayJobs(settings))  # type: ignore[arg-type]
    auth = {"authorization": "Bearer s3cret"}

    def call(method: str, path: str, body: Any = None, **query: str) -> tuple[int, Any]:
        raw = orjson.dumps(body) if body is not None else b""
        response = api.handle(Request(method, path, query, auth, raw))
        return response.status, json.loads(response.body)

    try:
        assert api.handle(Request("GET", "/api/failures")).status == 401
        assert api.handle(Request("POST", "/api/failures/retry", body=b"{}")).status == 401
        status, listed = call("GET", "/api/failures", reason="rejected", status="open")
        cli = q.failures("--reason", "rejected")
        assert status == 200 and sorted(listed["items"], key=lambda f: f["id"]) == cli
        _, by_table = call("GET", "/api/failures", table="public.orders,public.nope")
        assert [f["id"] for f in by_table["items"]] == [q.ids["unmapped"]]
        assert call("GET", "/api/failures", since="nonsense")[0] == 400
        status, shown = call("GET", f"/api/failures/{q.ids['rejected']}")
        assert status == 200 and shown == q.cli(
            "failures", "show", str(q.ids["rejected"]), "--json"
        )
        assert call("GET", "/api/failures/999999")[0] == 404

        q.sql(f"ALTER TABLE {q.db.table('customers')} DROP CONSTRAINT no_bad")
        assert call("POST", "/api/failures/retry", {})[0] == 400
        status, dry = call("POST", "/api/failures/retry", {"reason": "rejected", "dry_run": True})
        assert status == 200 and (dry["applied"], dry["superseded"]) == (1, 1)
        status, done = call("POST", "/api/failures/retry", {"ids": [q.ids["rejected"]]})
        assert status == 200 and done["applied"] == 1 and q.target.rows()[3][2] == "bad"
        assert q.row(q.ids["rejected"])["status"] == "retried"
        assert call("POST", "/api/failures/resolve", {"ids": [q.ids["old"]]})[0] == 400
        status, resolved = call(
            "POST", "/api/failures/resolve", {"ids": [q.ids["old"]], "note": "older"}
        )
        assert status == 200 and resolved["resolved"] == [q.ids["old"]]
        assert q.row(q.ids["old"])["note"] == "older"
    finally:
        engine.dispose()
