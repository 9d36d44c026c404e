"""The applier: one target transaction per batch for rows, ledger, failures and offsets.

For each batch (promises P2-P5, P7):

1. map every event through the configured table mapping; an unmapped table or column
   becomes a `Failure` (reason `unmapped`) and never becomes SQL;
2. read the stored positions of the batch's keys; a change not newer than its key's
   stored position is `superseded` and writes nothing;
3. collapse the newer changes per key (`mapping.collapse`) and COPY the winners into a
   staging table; advance `key_state` (guarded by position, so a concurrent writer can
   only win with a newer position) and write the rows that advanced: bulk upserts and
   deletes, never a round trip per event;
4. COPY one ledger row per change; a change id already in the ledger is a duplicate;
5. store every failure with its raw bytes, and each partition's next offset;
6. commit.

Steps 2-4 run under a savepoint: when the target rejects a row (a data or constraint
error), the batch is bisected until the offending changes are isolated; they are
quarantined (reason `rejected`) and the rest is applied.

    >>> applier = Applier(engine, settings)          # doctest: +SKIP
    >>> applier.prepare()                            # doctest: +SKIP
    >>> result = applier.apply(items, next_offsets, "cdc-recon")  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import psycopg2
import psycopg2.errors
import sqlalchemy as sa

from cdc_recon.batch import ApplyResult, Decoded, Failure, FailureReason, TopicPartitionKey
from cdc_recon.config import Settings
from cdc_recon.db import statements as st
from cdc_recon.db.reflect import reflect_target
from cdc_recon.db.sql import NULL, copy_line, copy_plain, escape, position_literal
from cdc_recon.events import Op
from cdc_recon.exceptions import (
    ApplyError,
    ConfigError,
    MappingError,
    TransientDatabaseError,
)
from cdc_recon.mapping import MISSING, MappedChange, TableMapper, Winner, collapse

_TRANSIENT_STATES = ("40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300")


class Applier:
    """Applies batches to the target database; holds one connection for its life."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.schema = settings.control_schema
        self._mappers: dict[str, TableMapper] = {}
        self._tables: dict[str, st.TableStatements] = {}
        self._fairy: Any = None

    def prepare(self) -> None:
        """Reflect every mapped target table; `ConfigError` names a bad mapping."""
        for index, mapping in enumerate(self.settings.tables):
            shape = reflect_target(self.engine, mapping, index)
            try:
                self._mappers[mapping.source] = TableMapper(mapping, shape)
            except ValueError as exc:
                raise ConfigError(f"config: tables.{index}: {exc}", key=f"tables.{index}") from exc
            self._tables[shape.table] = st.TableStatements(
                shape, mapping, f"_cdcr_stage_{index}", self.schema
            )

    def close(self) -> None:
        if self._fairy is not None:
            try:
                self._fairy.close()
            finally:
                self._fairy = None

    # --- connection -------------------------------------------------------

    def _connection(self) -> Any:
        if self._fairy is None:
            try:
                fairy = self.engine.raw_connection()
            except sa.exc.OperationalError as exc:
                raise TransientDatabaseError(f"cannot connect to the target: {exc.orig}") from exc
            cur = fairy.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(st.ledger_stage_ddl())
            for table in self._tables.values():
                cur.execute(table.create_stage())
            cur.close()
            fairy.commit()
            self._fairy = fairy
        return self._fairy

    def stored_offsets(
        self, group_id: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """The next offsets stored in the target for `partitions` (absent: never stored)."""
        wanted = set(partitions)
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(st.read_offsets(self.schema), {"group": group_id})
                rows = cur.fetchall()
            conn.commit()
        except psycopg2.Error as exc:
            self._fail(exc)
        return {(t, p): o for t, p, o in rows if (t, p) in wanted}

    # --- one batch --------------------------------------------------------

    def apply(
        self,
        items: Sequence[Decoded | Failure],
        next_offsets: Mapping[TopicPartitionKey, int],
        group_id: str,
    ) -> ApplyResult:
        """Apply one batch in one transaction; see the module docstring for the steps."""
        result = ApplyResult(next_offsets=dict(next_offsets))
        changes, failures = self._map(items, result)
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                rejected = self._apply_isolating(cur, changes, result, dirty=[False])
                failures.extend(rejected)
                self._store_failures(cur, failures)
                self._store_offsets(cur, group_id, next_offsets)
            conn.commit()
        except psycopg2.Error as exc:
            self._fail(exc)
        result.failures = failures
        return result

    def _map(
        self, items: Sequence[Decoded | Failure], result: ApplyResult
    ) -> tuple[list[MappedChange], list[Failure]]:
        changes: list[MappedChange] = []
        failures: list[Failure] = []
        for item in items:
            if isinstance(item, Failure):
                failures.append(item)
                continue
            event = item.event
            if event is None or event.op is Op.TRUNCATE:
                result.skipped += 1
                continue
            mapper = self._mappers.get(event.table)
            try:
                if mapper is None:
                    raise MappingError(f"table {event.table!r} is not mapped", table=event.table)
                changes.append(mapper.change(item))
            except MappingError as exc:
                failures.append(
                    Failure(item.message, FailureReason.UNMAPPED, str(exc), event.table)
                )
        return changes, failures

    def _apply_isolating(
        self, cur: Any, changes: list[MappedChange], result: ApplyResult, dirty: list[bool]
    ) -> list[Failure]:
        """Apply `changes` under a savepoint; bisect to isolate rows the target rejects."""
        if not changes:
            return []
        cur.execute("SAVEPOINT cdcr_batch")
        try:
            if dirty[0]:
                for table in self._tables.values():
                    cur.execute(table.truncate_stage())
            dirty[0] = True
            partial = ApplyResult()
            self._apply_changes(cur, changes, partial)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            cur.execute("ROLLBACK TO SAVEPOINT cdcr_batch")
            if len(changes) == 1:
                change = changes[0]
                detail = (exc.pgerror or str(exc)).strip().splitlines()[0]
                source = change.decoded.event.table if change.decoded.event else None
                return [Failure(change.decoded.message, FailureReason.REJECTED, detail, source)]
            middle = len(changes) // 2
            return self._apply_isolating(
                cur, changes[:middle], result, dirty
            ) + self._apply_isolating(cur, changes[middle:], result, dirty)
        cur.execute("RELEASE SAVEPOINT cdcr_batch")
        _merge(result, partial)
        return []

    def _apply_changes(self, cur: Any, changes: list[MappedChange], result: ApplyResult) -> None:
        stored = self._stored_positions(cur, changes)
        newer: list[MappedChange] = []
        outcomes: list[str] = []
        for change in changes:
            before = stored.get((change.target, change.key_text))
            is_newer = before is None or change.position.parts > before
            outcomes.append("applied" if is_newer else "superseded")
            if is_newer:
                newer.append(change)
        by_table: dict[str, list[MappedChange]] = {}
        for change in newer:
            by_table.setdefault(change.target, []).append(change)
        for target, group in by_table.items():
            self._write_rows(cur, self._tables[target], collapse(group))
        self._write_ledger(cur, changes, outcomes, result)

    def _stored_positions(
        self, cur: Any, changes: list[MappedChange]
    ) -> dict[tuple[str, str], tuple[int, ...]]:
        pairs = {(c.target, c.key_text) for c in changes}
        cur.execute(
            st.stored_positions(self.schema),
            {"tables": [t for t, _ in pairs], "keys": [k for _, k in pairs]},
        )
        return {(t, k): tuple(position) for t, k, position in cur.fetchall()}

    def _write_rows(self, cur: Any, table: st.TableStatements, winners: dict[str, Winner]) -> None:
        missing_sets: dict[frozenset[int], int] = {}
        lines = []
        for key, winner in winners.items():
            missing = frozenset(i for i, v in enumerate(winner.row) if v is MISSING)
            uset = missing_sets.setdefault(missing, len(missing_sets)) if not winner.deleted else -1
            extra = (key, position_literal(winner.change.position.parts), winner.change.op, uset)
            lines.append(copy_line(winner.row, table.encoders) + "\t" + copy_plain(extra))
        cur.copy_expert(table.copy_stage(), io.StringIO("\n".join(lines) + "\n"))
        cur.execute(table.advance(), {"table": table.shape.table})
        for missing, uset in missing_sets.items():
            cur.execute(table.upsert(missing), {"uset": uset})
        if any(w.deleted for w in winners.values()):
            cur.execute(table.delete())

    def _write_ledger(
        self, cur: Any, changes: list[MappedChange], outcomes: list[str], result: ApplyResult
    ) -> None:
        """One ledger row per change: COPY straight in, or through a stage on conflict.

        The direct COPY is the common case; a change id already in the ledger (Kafka
        redelivered after a crash, a replay) makes it fail, and the savepoint lets the
        batch fall back to `INSERT ... ON CONFLICT DO NOTHING`.
        """
        lines: list[str] = []
        counts: Counter[str] = Counter()
        seen: set[str] = set()
        for change, outcome in zip(changes, outcomes, strict=True):
            if change.change_id in seen:  # one transaction touching a row twice
                continue
            seen.add(change.change_id)
            lines.append(self._ledger_line(change, outcome))
            counts[outcome] += 1
        data = "\n".join(lines) + "\n"
        cur.execute("SAVEPOINT cdcr_ledger")
        try:
            cur.copy_expert(st.ledger_copy(self.schema), io.StringIO(data))
            cur.execute("RELEASE SAVEPOINT cdcr_ledger")
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT cdcr_ledger")
            cur.copy_expert(
                f"COPY _cdcr_ledger ({st.LEDGER_COLUMNS}) FROM STDIN", io.StringIO(data)
            )
            cur.execute(st.ledger_insert(self.schema))
            counts = Counter(dict(cur.fetchall()))
            cur.execute("TRUNCATE _cdcr_ledger")
        for change, outcome in zip(changes, outcomes, strict=True):
            if outcome == "applied":
                label = (change.target, change.op.value)
                result.applied_by_table[label] = result.applied_by_table.get(label, 0) + 1
        result.applied += counts["applied"]
        result.superseded += counts["superseded"]
        result.duplicates += len(changes) - counts["applied"] - counts["superseded"]

    @staticmethod
    def _ledger_line(change: MappedChange, outcome: str) -> str:
        event = change.decoded.event
        message = change.decoded.message
        assert event is not None
        tx = NULL if event.tx is None else escape(event.tx)
        return (
            f"{escape(change.change_id)}\t{escape(event.table)}\t{escape(change.target)}\t"
            f"{escape(change.key_text)}\t{change.op.value}\t"
            f"{position_literal(change.position.parts)}\t{tx}\t{event.source_ts_ms}\t"
            f"{escape(message.topic)}\t{message.partition}\t{message.offset}\t{outcome}"
        )

    def _store_failures(self, cur: Any, failures: list[Failure]) -> None:
        if not failures:
            return
        rows = [
            (
                f.message.topic,
                f.message.partition,
                f.message.offset,
                psycopg2.Binary(f.message.key) if f.message.key is not None else None,
                psycopg2.Binary(f.message.value) if f.message.value is not None else None,
                f.reason,
                f.detail,
                f.table,
            )
            for f in failures
        ]
        cur.executemany(st.insert_failures(self.schema), rows)

    def _store_offsets(
        self, cur: Any, group_id: str, next_offsets: Mapping[TopicPartitionKey, int]
    ) -> None:
        if not next_offsets:
            return
        items = sorted(next_offsets.items())
        cur.execute(
            st.store_offsets(self.schema),
            {
                "group": group_id,
                "topics": [t for (t, _), _ in items],
                "partitions": [p for (_, p), _ in items],
                "offsets": [o for _, o in items],
            },
        )

    def _fail(self, exc: psycopg2.Error) -> NoReturn:
        """Roll back, drop the connection if it is broken, and raise our error."""
        try:
            if self._fairy is not None:
                self._fairy.rollback()
        except psycopg2.Error:
            pass
        transient = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) or (
            exc.pgcode or ""
        ).startswith(("08",) + _TRANSIENT_STATES)
        if transient:
            # A broken connection must not go back to the pool (its reset would fail loudly).
            if self._fairy is not None:
                self._fairy.invalidate()
                self._fairy = None
            raise TransientDatabaseError(f"target database: {_first_line(exc)}") from exc
        raise ApplyError(f"target database rejected the batch: {_first_line(exc)}") from exc


def _first_line(exc: psycopg2.Error) -> str:
    return (exc.pgerror or str(exc) or type(exc).__name__).strip().splitlines()[0]


def _merge(total: ApplyResult, part: ApplyResult) -> None:
    total.applied += part.applied
    total.superseded += part.superseded
    total.duplicates += part.duplicates
    for label, count in part.applied_by_table.items():
        total.applied_by_table[label] = total.applied_by_table.get(label, 0) + count
