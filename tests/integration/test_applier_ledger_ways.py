"""The applier's two ways of writing the ledger record the same thing (P2, P3).

The quick way COPYs a batch's ledger rows into the ledger and corrects the outcomes the
stored positions change; the careful way (taken when a change id is in the ledger
already) stages them and classifies them in SQL. Random batches of changes to a few
keys, with late, older, repeated and same-transaction changes, go through an applier
that takes the quick way whenever it can and through one that is always careful; their
results, ledgers, key states and rows must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.apply.applier import Applier
from cdc_recon.apply.encode import Encoded
from cdc_recon.apply.mapping import MappedChange
from cdc_recon.batch import ApplyResult, Decoded
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import Op
from tests.conftest import Database, Services, _schema_fixture
from tests.integration.test_applier import _settings, event

pytestmark = pytest.mark.integration

TABLE_DDL = "(id int PRIMARY KEY, name varchar(20) NOT NULL, notes text)"


class CountingApplier(Applier):
    """Takes the quick way when it can; counts the batches written the careful way."""

    careful_writes = 0

    def _write_careful(
        self, cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
    ) -> None:
        self.careful_writes += 1
        super()._write_careful(cur, changes, encoded, result)


class CarefulApplier(Applier):
    """Always writes the ledger the careful way."""

    def _write_quick(
        self, cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
    ) -> None:
        self._write_careful(cur, changes, encoded, result)


@pytest.fixture
def careful_db(services: Services) -> Iterator[Database]:
    yield from _schema_fixture(services.target_url)


def applier_for(db: Database, kind: type[Applier]) -> Applier:
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {db.table('customers')} {TABLE_DDL}"))
    settings = _settings(db)
    init_control_schema(db.engine, settings.control_schema)
    applier = kind(db.engine, settings)
    applier.prepare()
    return applier


def batches(seed: int) -> list[list[Decoded]]:
    """Batches of changes to six keys: mostly newer, some older (replayed or late in
    the batch), some sent again, some a second change of a transaction to a key."""
    rng = random.Random(seed)
    lsn, sent, out = 1000, [], []
    for _ in range(14):
        batch = []
        for _ in range(rng.randint(1, 12)):
            key, roll = rng.randint(1, 6), rng.random()
            if sent and roll < 0.12:
                batch.append(rng.choice(sent))  # delivered again
                continue
            if roll < 0.3:
                position = lsn - rng.randint(1, 60)  # older than what may be stored
            else:
                lsn += rng.randint(1, 5)
                position = lsn
            tx = position
            if sent and roll > 0.92:
                tx = int(rng.choice(sent).event.tx)  # the same transaction again
            op = Op.DELETE if rng.random() < 0.15 else Op.UPDATE
            change = event(key, position, op, tx=tx, notes=f"n{position}")
            batch.append(change)
            sent.append(change)
        out.append(batch)
    return out


def state(db: Database) -> tuple[Any, ...]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        with db.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql.format(s=f'"{db.schema}"')))]

    return (
        rows("SELECT change_id, op, position, outcome, source_ts FROM {s}.ledger ORDER BY 1, 5"),
        rows("SELECT key_text, position, deleted, incomplete FROM {s}.key_state ORDER BY 1"),
        rows("SELECT * FROM {s}.customers ORDER BY id"),
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_quick_and_careful_ledgers_agree(
    target_db: Database, careful_db: Database, seed: int
) -> None:
    quick = applier_for(target_db, CountingApplier)
    careful = applier_for(careful_db, CarefulApplier)
    superseded = 0
    try:
        for number, batch in enumerate(batches(seed)):
            offsets = {("t", 0): number}
            got, want = quick.apply(batch, offsets, "g"), careful.apply(batch, offsets, "g")
            assert (got.applied, got.superseded, got.duplicates) == (
                want.applied,
                want.superseded,
                want.duplicates,
            ), f"batch {number}"
            by_op = [{op: n for (_, op), n in r.applied_by_table.items()} for r in (got, want)]
            assert by_op[0] == by_op[1], f"batch {number}"  # the tables' schemas differ
            superseded += got.superseded
    finally:
        quick.close()
        careful.close()
    assert state(target_db) == state(careful_db)
    assert isinstance(quick, CountingApplier)
    assert 0 < quick.careful_writes < len(batches(seed)), "both ways were taken"
    assert superseded > 0, "some changes were superseded"


def test_an_older_first_change_of_a_key_that_advances_is_superseded(target_db: Database) -> None:
    """The second kind of correction: the key advances in the batch, but its first
    change here is older than what the key held before."""
    applier = applier_for(target_db, CountingApplier)
    try:
        applier.apply([event(1, 10)], {}, "g")
        result = applier.apply([event(1, 5), event(1, 20), event(2, 30)], {}, "g")
    finally:
        applier.close()
    assert (result.applied, result.superseded) == (2, 1)
    with target_db.engine.connect() as conn:
        outcomes = conn.execute(
            sa.text(f"SELECT position[1], outcome FROM {target_db.table('ledger')} ORDER BY 1")
        ).all()
    assert [tuple(row) for row in outcomes] == [
        (5, "superseded"),
        (10, "applied"),
        (20, "applied"),
        (30, "applied"),
    ]
    assert isinstance(applier, CountingApplier) and applier.careful_writes == 0
