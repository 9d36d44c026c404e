"""The statements one batch's transaction runs, in the order the applier calls them.

`Applier.write` (`apply.applier`, whose docstring has the protocol) calls, on one
cursor inside the batch's transaction and savepoint:

- `write_quick`: the ledger lines COPYed straight into the ledger, then each table's
  winners through its stage, key_state advanced under the position guard, rows written
  (`write_rows`), the few `applied` lines the stored positions make superseded corrected;
- `write_careful`, when a change id is in the ledger already (a redelivery, a replay):
  the ledger lines through a stage, moved in by one statement that skips known ids;
- `store_failures` and `store_offsets`: every failure and each partition's next offset.

The row-by-row way for rows the target rejects is `apply.isolate`'s.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from cdc_recon.apply import statements as st
from cdc_recon.apply.encode import Encoded, EncodedTable, encode_ledger_stage, superseded_lines
from cdc_recon.apply.mapping import MappedChange
from cdc_recon.batch import ApplyResult, Failure, TopicPartitionKey
from cdc_recon.exceptions import TransientDatabaseError
from cdc_recon.pg.params import binary

COPY_CHUNK = st.COPY_CHUNK


def read_offsets(
    engine: sa.Engine, schema: str, group_id: str, partitions: Iterable[TopicPartitionKey]
) -> dict[TopicPartitionKey, int]:
    """The next offsets stored for `partitions`. On a connection of its own: Kafka
    assigns partitions on the service's thread while the pipeline's worker may be inside
    a batch transaction on the applier's connection, which a commit here would cut."""
    wanted = set(partitions)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(st.read_offsets(schema), {"group": group_id}).all()
    except sa.exc.OperationalError as exc:
        raise TransientDatabaseError(f"cannot read stored offsets: {exc.orig}") from exc
    return {(t, p): o for t, p, o in rows if (t, p) in wanted}


def write_quick(
    cur: Any, schema: str, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
) -> None:
    """The ledger rows straight into the ledger, then each table's rows; the few
    `applied` rows the stored positions make superseded are corrected after."""
    ledger = encoded.ledger
    cur.copy_expert(st.copy_ledger(schema), io.StringIO(ledger.text), size=COPY_CHUNK)
    counts = dict(ledger.counts)
    corrected: list[str] = []
    millis: list[int] = []
    for stage in encoded.tables:
        table = stage.table
        cur.copy_expert(table.copy_stage(), io.StringIO(stage.text), size=COPY_CHUNK)
        cur.execute(
            table.advance_key_state(stage.several),
            {"table": table.shape.table, "staged": stage.rows},
        )
        doubtful = {key: before for key, before in cur.fetchall()}
        if doubtful:
            for change in superseded_lines(changes, table.shape.table, doubtful):
                corrected.append(change.change_id)
                millis.append(change.decoded.event.source_ts_ms if change.decoded.event else 0)
                applied = (change.target, change.op.value, "applied")
                superseded = (change.target, change.op.value, "superseded")
                counts[applied] -= 1
                counts[superseded] = counts.get(superseded, 0) + 1
        write_rows(cur, stage)
    if corrected:
        cur.execute(st.supersede(schema), {"ids": corrected, "millis": millis})
    for (target, op, outcome), count in counts.items():
        if count:
            result.add_outcome(target, op, outcome, count)
    result.duplicates += ledger.changes - sum(counts.values())


def write_careful(
    cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
) -> None:
    """The ledger lines through a stage, moved in by `TableStatements.advance`, which
    classifies them and skips the change ids already in the ledger."""
    copy = f"COPY _cdcr_ledger ({st.STAGE_LEDGER_COLUMNS}) FROM STDIN"
    cur.copy_expert(copy, io.StringIO(encode_ledger_stage(changes)), size=COPY_CHUNK)
    recorded = 0
    for stage in encoded.tables:
        table = stage.table
        cur.copy_expert(table.copy_stage(), io.StringIO(stage.text), size=COPY_CHUNK)
        cur.execute(table.advance(), {"table": table.shape.table})
        for op, outcome, count in cur.fetchall():
            recorded += count
            result.add_outcome(table.shape.table, op, outcome, count)
        write_rows(cur, stage)
    cur.execute("TRUNCATE _cdcr_ledger")
    result.duplicates += encoded.ledger.changes - recorded


def write_rows(cur: Any, stage: EncodedTable) -> None:
    """The staged rows of keys that advanced: bulk upserts and deletes."""
    table = stage.table
    for missing, uset in stage.missing_sets.items():
        cur.execute(table.upsert(missing), {"uset": uset})
    if stage.has_deletes:
        cur.execute(table.delete())
    cur.execute(table.truncate_stage())


def store_failures(cur: Any, schema: str, failures: list[Failure]) -> None:
    """Every failure of the batch with its raw bytes (its dead letter `pending`)."""
    if not failures:
        return
    rows = [
        (
            f.message.topic,
            f.message.partition,
            f.message.offset,
            binary(f.message.key),
            binary(f.message.value),
            f.reason,
            f.detail,
            f.table,
        )
        for f in failures
    ]
    cur.executemany(st.insert_failures(schema), rows)


def store_offsets(
    cur: Any, schema: str, group_id: str, next_offsets: Mapping[TopicPartitionKey, int]
) -> None:
    """Each partition's next offset, in the batch's transaction (P4)."""
    if not next_offsets:
        return
    items = sorted(next_offsets.items())
    cur.execute(
        st.store_offsets(schema),
        {
            "group": group_id,
            "topics": [t for (t, _), _ in items],
            "partitions": [p for (_, p), _ in items],
            "offsets": [o for _, o in items],
        },
    )
