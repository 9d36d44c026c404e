"""The trigger change log (`cdc-recon source install`) on the real source database.

The sweeper anti-joins the log against the ledger by change id, so the trigger's
`key_text` must be byte for byte what `cdc_recon.events.key_text` computes from the
values Debezium puts in a message key.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import key_text
from cdc_recon.exceptions import ConfigError
from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog
from cdc_recon.sweep.sweeper import sweep_once
from tests.conftest import Database

pytestmark = pytest.mark.integration

TRICKY = [
    "plain",
    'quo"te',
    "back\\slash",
    "tab\there",
    "new\nline",
    "ünïcødé ✓ 😀",
    "'single'",
    "\u0001ctl",
    "",
    " spaced ",
    "/slash</script>",
    "\u2028sep",
]


def settings_for(db: Database, **overrides: Any) -> Settings:
    return load_settings(
        None,
        source_url=db.url,
        sweeper={"changelog_schema": db.schema},
        **overrides,
    )


def execute(db: Database, *statements: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(s=f'"{db.schema}"')), params)


def logged(db: Database) -> list[tuple[str, str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT source_table, key_text, op FROM "{db.schema}".changes ORDER BY id')
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_trigger_key_text_equals_python_key_text(source_db: Database) -> None:
    execute(
        source_db,
        "CREATE TABLE {s}.k_int (id bigint PRIMARY KEY, v text)",
        "CREATE TABLE {s}.k_text (id text PRIMARY KEY)",
        "CREATE TABLE {s}.k_uuid (id uuid PRIMARY KEY)",
        "CREATE TABLE {s}.k_comp (a int, b text, flag boolean, PRIMARY KEY (b, flag, a))",
        "CREATE TABLE {s}.k_mapped (a int, b text, PRIMARY KEY (b, a))",
    )
    name = source_db.schema
    settings = settings_for(
        source_db,
        tables=[{"source": f"{name}.k_mapped", "target": "public.x", "key": ["a", "b"]}],
    )
    log = PgTriggerLog(settings)
    try:
        installed = log.install([f"{name}.{t}" for t in ("k_int", "k_text", "k_uuid")])
        installed += log.install([f"{name}.k_comp", f"{name}.k_mapped"])
        again = log.install([f"{name}.k_int"])  # idempotent
    finally:
        log.close()
    assert [i.key for i in installed] == [("id",), ("id",), ("id",), ("b", "flag", "a"), ("a", "b")]
    assert again[0].key == ("id",)

    uuids = [uuid.uuid4() for _ in range(3)]
    expected: list[tuple[str, str, str]] = []
    with source_db.engine.begin() as conn:
        for n in (0, -1, 2**40, 7):
            conn.execute(sa.text(f'INSERT INTO "{name}".k_int VALUES (:n, :n)'), {"n": n})
            expected.append((f"{name}.k_int", key_text([n]), "c"))
        for text in TRICKY:
            conn.execute(sa.text(f'INSERT INTO "{name}".k_text VALUES (:t)'), {"t": text})
            expected.append((f"{name}.k_text", key_text([text]), "c"))
        for value in uuids:
            conn.execute(sa.text(f'INSERT INTO "{name}".k_uuid VALUES (:u)'), {"u": value})
            expected.append((f"{name}.k_uuid", key_text([str(value)]), "c"))
        for i, text in enumerate(TRICKY[:4]):
            row = {"a": i, "b": text, "f": i % 2 == 0}
            conn.execute(sa.text(f'INSERT INTO "{name}".k_comp VALUES (:a, :b, :f)'), row)
            expected.append((f"{name}.k_comp", key_text([text, i % 2 == 0, i]), "c"))
            conn.execute(sa.text(f'INSERT INTO "{name}".k_mapped VALUES (:a, :b)'), row)
            expected.append((f"{name}.k_mapped", key_text([i, text]), "c"))
    assert logged(source_db) == expected


def test_updates_deletes_key_changes_and_uninstall(source_db: Database) -> None:
    name = source_db.schema
    execute(source_db, "CREATE TABLE {s}.t (id int PRIMARY KEY, v text)")
    log = PgTriggerLog(settings_for(source_db))
    try:
        log.install([f"{name}.t"])
        for statement in (
            "INSERT INTO {s}.t VALUES (1, 'a'), (2, 'b')",
            "UPDATE {s}.t SET v = 'c' WHERE id = 1",
            "UPDATE {s}.t SET id = 3 WHERE id = 2",
            "DELETE FROM {s}.t WHERE id = 1",
        ):
            execute(source_db, statement)  # one transaction each
        table = f"{name}.t"
        assert logged(source_db) == [
            (table, '["1"]', "c"),
            (table, '["2"]', "c"),
            (table, '["1"]', "u"),
            (table, '["2"]', "d"),
            (table, '["3"]', "c"),
            (table, '["1"]', "d"),
        ]
        with source_db.engine.connect() as conn:
            txids, ordered = conn.execute(
                sa.text(
                    "SELECT count(DISTINCT txid), bool_and(lsn > coalesce(prev, '0/0')) FROM "
                    "(SELECT txid, lsn, lag(lsn) OVER (ORDER BY id) AS prev "
                    f'FROM "{name}".changes) x'
                )
            ).one()
        assert txids == 4 and ordered, "one xid per statement here, LSNs increasing"

        assert log.installed() == [table]
        assert log.uninstall([table]) == [table]
        execute(source_db, "INSERT INTO {s}.t VALUES (9, 'z')")
        assert len(logged(source_db)) == 6, "no trigger after uninstall"
        assert log.uninstall([], drop_log=True) == []
    finally:
        log.close()
    with source_db.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT to_regclass('\"{name}\".changes')")).scalar() is None


def test_a_sweep_without_a_change_log_says_how_to_install_it(
    source_db: Database, target_db: Database
) -> None:
    init_control_schema(target_db.engine, target_db.schema)
    settings = load_settings(
        None,
        source_url=source_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        sweeper={"changelog_schema": f"{source_db.schema}_absent"},
    )
    with pytest.raises(ConfigError, match="cdc-recon source install") as info:
        sweep_once(settings)
    assert info.value.key == "sweeper.changelog_schema"
