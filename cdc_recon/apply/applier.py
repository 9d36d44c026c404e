"""The applier: one target transaction per batch for rows, ledger, failures and offsets.

A batch goes through two halves, so that the service can prepare batch N+1 while the
target applies batch N (`cdc_recon.apply.pipeline`):

`prepare_batch` (Python only, no database):
1. map every event through the configured table mapping; an unmapped table or column
   becomes a `Failure` (reason `unmapped`) and never becomes SQL, a value that does not
   fit its column or a key that disagrees with its row one of reason `invalid`; a new
   source column is added to the target first (`on_new_column`, `apply.schema_changes`)
   and the batch mapped again;
2. collapse the changes per key (`mapping.collapse`) and encode the winners and one
   ledger line per change as COPY text.

`write` (one transaction, promises P2-P5):
3. COPY the ledger lines straight into the ledger, `superseded` when late in the batch
   and `applied` otherwise (`encode.encode_ledger`);
4. per table, COPY the winners into a stage and, in one statement, advance `key_state`
   where the winner is newer (the guard: an older or concurrent write can never move a
   key back, P3), drop the rest from the stage, and return the keys whose position
   before the batch makes some of their `applied` lines superseded (a line is applied
   only when newer than that); write the rows that advanced with bulk upserts and
   deletes; then mark those lines superseded (none, while the stream moves forward);
5. store every failure with its raw bytes, and each partition's next offset; commit.

A change whose source time has no ledger partition fails the batch, which is rolled
back and written again once the partitions it needs exist (`apply.ledger`). A change
id already in the ledger (a redelivery, a replay) fails the COPY of step 3:
the batch is then written the careful way, with the ledger lines staged and moved in
by one statement that classifies them and skips the ones already there (the
duplicates). COPYing into the ledger costs PostgreSQL ~3 µs less per change.

Steps 3-4 run under a savepoint: when the target rejects a row (an error of the data,
`pg.sqlstate`), the batch is written again row by row in one statement per table
(`apply.isolate`); the rejected changes are quarantined (reason `rejected`) and the
rest is applied. An unavailable database raises `TransientDatabaseError`: the batch is
retried whole.

    >>> applier = Applier(engine, settings)          # doctest: +SKIP
    >>> applier.prepare()                            # doctest: +SKIP
    >>> result = applier.apply(items, next_offsets, "cdc-recon")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import sqlalchemy as sa

from cdc_recon.apply import isolate, writes
from cdc_recon.apply import statements as st
from cdc_recon.apply.encode import (
    Encoded,
    PreparedBatch,
    encode_ledger,
    encode_winners,
)
from cdc_recon.apply.ledger import ensure_partitions
from cdc_recon.apply.ledger_plan import CHANGE_ID_INDEX, Granularity, buckets_of
from cdc_recon.apply.mapping import MappedChange, TableMapper, collapse
from cdc_recon.apply.reflect import reflect_target
from cdc_recon.apply.schema_changes import ColumnChanges
from cdc_recon.batch import ApplyResult, Decoded, Failure, FailureReason, TopicPartitionKey
from cdc_recon.config import Settings, TableMapping
from cdc_recon.events import ChangeEvent, Op
from cdc_recon.exceptions import (
    ApplyError,
    ConfigError,
    MappingError,
    NewColumns,
    TransientDatabaseError,
)
from cdc_recon.pg import errors as pg_errors
from cdc_recon.pg.errors import CONNECT_FAILED, DriverError, first_line
from cdc_recon.pg.sql import quote_ident

LOG = logging.getLogger("cdc_recon.apply")
COPY_CHUNK = st.COPY_CHUNK


class Applier:
    """Applies batches to the target database; holds one connection for its life."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.schema = settings.control_schema
        self._mappers: dict[str, TableMapper] = {}
        self._tables: dict[str, st.TableStatements] = {}
        self._versions: dict[int, int] = {}  # reloads per mapping (schema changes)
        self._staged: set[str] = set()  # stages created on the current connection
        self._columns = ColumnChanges(engine, settings.tables)
        self._fairy: Any = None
        self._writing = False  # set by `write`, read by `cancel` on another thread

    def prepare(self) -> None:
        """Reflect every mapped target table; `ConfigError` names a bad mapping."""
        for index, mapping in enumerate(self.settings.tables):
            self._load(index, mapping)

    def _load(self, index: int, mapping: TableMapping) -> None:
        """The mapper and statements of one table from its shape as it is now. A table
        reloaded after a schema change gets a stage of a new name: the batches already
        prepared keep theirs (their COPY text has the old columns)."""
        shape = reflect_target(self.engine, mapping, index)
        try:
            mapper = TableMapper(mapping, shape, mapping.source_family(self.settings.format))
        except ValueError as exc:
            raise ConfigError(f"config: tables.{index}: {exc}", key=f"tables.{index}") from exc
        version = self._versions[index] = self._versions.get(index, -1) + 1
        stage = f"_cdcr_stage_{index}" + (f"_v{version}" if version else "")
        # Replaced whole, never changed in place: the worker thread reads them meanwhile.
        self._mappers = {**self._mappers, mapping.source: mapper}
        table = st.TableStatements(shape, mapping, stage, self.schema)
        self._tables = {**self._tables, shape.table: table}

    def cancel(self) -> bool:
        """Cancel the batch being written, from another thread (a stop that will not
        wait): `write` raises `TransientDatabaseError` and its transaction is rolled
        back. Whether a batch was being written."""
        fairy = self._fairy
        if fairy is None or not self._writing:
            return False
        fairy.driver_connection.cancel()
        return True

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
            except CONNECT_FAILED as exc:
                reason = getattr(exc, "orig", None) or exc
                raise TransientDatabaseError(f"cannot connect to the target: {reason}") from exc
            cur = fairy.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(st.ledger_stage_ddl())
            cur.execute(isolate.ADVANCED_DDL)
            cur.execute(isolate.before_ddl(self.schema))
            cur.close()
            fairy.commit()
            self._fairy = fairy
            self._staged = set()
        return self._fairy

    def _create_stages(self, conn: Any, tables: Iterable[st.TableStatements]) -> None:
        """The stages of `tables` on this connection, once each (temporary tables), in a
        transaction of their own: a batch rolled back must not take them with it."""
        new = [table for table in tables if table.stage not in self._staged]
        if not new:
            return
        with conn.cursor() as cur:
            for table in new:
                cur.execute(table.create_stage())
                cur.execute(isolate.text_stage_ddl(table))
        conn.commit()
        self._staged.update(table.stage for table in new)

    def stored_offsets(
        self, group_id: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """The next offsets stored in the target for `partitions` (absent: never stored),
        on a connection of its own (`writes.read_offsets`)."""
        return writes.read_offsets(self.engine, self.schema, group_id, partitions)

    # --- one batch --------------------------------------------------------

    def apply(
        self,
        items: Sequence[Decoded | Failure],
        next_offsets: Mapping[TopicPartitionKey, int],
        group_id: str,
    ) -> ApplyResult:
        """Prepare and write one batch; see the module docstring for the steps."""
        return self.write(self.prepare_batch(items), next_offsets, group_id)

    def prepare_batch(self, items: Sequence[Decoded | Failure]) -> PreparedBatch:
        """Steps 1-2: map, collapse and encode, without touching the database, unless
        a change carries new source columns (`apply.evolve`): then they are added to
        the target first and the batch is mapped again with the table's new shape."""
        while True:
            try:
                batch = self._prepare(items)
            except NewColumns as exc:
                existing = self._mappers[exc.table or ""].shape.columns
                index = self._columns.add(exc, existing)
                if index is not None:
                    self._load(index, self.settings.tables[index])
                continue
            self._columns.count_ignored(self._mappers.values())
            return batch

    def _prepare(self, items: Sequence[Decoded | Failure]) -> PreparedBatch:
        batch = PreparedBatch()
        mapped, failed, truncate = batch.changes.append, batch.failures.append, Op.TRUNCATE
        for item in items:
            if isinstance(item, Failure):
                failed(item)
                continue
            event = item.event
            if event is None or event.op is truncate:
                batch.skipped += 1
                continue
            change = self._map(item, event)
            if isinstance(change, Failure):
                failed(change)
            else:
                mapped(change)
        batch.encoded = self._encode(batch.changes)
        return batch

    def _map(self, item: Decoded, event: ChangeEvent) -> MappedChange | Failure:
        """One event in target terms, or the failure that quarantines its message."""
        mapper = self._mappers.get(event.table)
        try:
            if mapper is None:
                raise MappingError(f"table {event.table!r} is not mapped", table=event.table)
            return mapper.change(item)
        except NewColumns as exc:
            refused = self._columns.refusal(exc)
            if refused is None:
                raise
            return Failure(item.message, FailureReason.UNMAPPED, f"{exc}: {refused}", event.table)
        except MappingError as exc:
            return Failure(item.message, exc.reason, str(exc), event.table)
        except Exception as exc:  # a value the mapper did not foresee is its message's
            detail = f"{type(exc).__name__}: {exc}"
            return Failure(item.message, FailureReason.INVALID, detail, event.table)

    def write(
        self,
        batch: PreparedBatch,
        next_offsets: Mapping[TopicPartitionKey, int],
        group_id: str,
    ) -> ApplyResult:
        """Steps 3-5 in one transaction; raises `TransientDatabaseError` to be retried.

        A change whose source time has no ledger partition fails the transaction: it is
        rolled back, the batch's missing partitions are created (`apply.ledger`, their
        own short transactions) and the batch is written again, once.
        """
        try:
            return self._write_once(batch, next_offsets, group_id)
        except _NoPartition:
            self._create_partitions(batch.changes)
        try:
            return self._write_once(batch, next_offsets, group_id)
        except _NoPartition as again:
            raise TransientDatabaseError(
                f"target database: no ledger partition for a change of this batch, though "
                f"one was just made (a drop of that partition not finished?): {again}"
            ) from again.__cause__

    def _write_once(
        self,
        batch: PreparedBatch,
        next_offsets: Mapping[TopicPartitionKey, int],
        group_id: str,
    ) -> ApplyResult:
        result = ApplyResult(next_offsets=dict(next_offsets), skipped=batch.skipped)
        failures = list(batch.failures)
        conn = self._connection()
        self._writing = True
        try:
            if batch.encoded is not None:
                self._create_stages(conn, (stage.table for stage in batch.encoded.tables))
            with conn.cursor() as cur:
                failures.extend(self._write_isolating(cur, batch.changes, batch.encoded, result))
                writes.store_failures(cur, self.schema, failures)
                writes.store_offsets(cur, self.schema, group_id, next_offsets)
            conn.commit()
        except DriverError as exc:
            if self._missing_partition(exc):
                conn.rollback()
                raise _NoPartition(first_line(exc)) from exc
            self._fail(exc)
        finally:
            self._writing = False
        result.failures = failures
        return result

    def _missing_partition(self, exc: DriverError) -> bool:
        return pg_errors.is_missing_partition(exc, self.schema, "ledger")

    def _create_partitions(self, changes: Sequence[MappedChange]) -> None:
        """The ledger partitions of the batch's source times (those there are kept)."""
        config = self.settings.ledger
        millis = {c.decoded.event.source_ts_ms for c in changes if c.decoded.event is not None}
        wanted = buckets_of(millis, Granularity.of(config.partition))
        try:
            ensure_partitions(
                self._connection(), self.schema, wanted, lock_timeout=config.lock_timeout
            )
        except DriverError as exc:
            self._fail(exc)

    def _encode(self, changes: list[MappedChange]) -> Encoded:
        by_table: dict[str, list[MappedChange]] = {}
        for change in changes:
            by_table.setdefault(change.target, []).append(change)
        tables = [
            encode_winners(self._tables[target], collapse(group))
            for target, group in by_table.items()
        ]
        return Encoded(tables, encode_ledger(changes))

    def _write_isolating(
        self,
        cur: Any,
        changes: list[MappedChange],
        encoded: Encoded | None,
        result: ApplyResult,
    ) -> list[Failure]:
        """Write under a savepoint; when the target rejects a row, write the batch again
        row by row (`apply.isolate`) and return the rejected changes' failures.

        The quick way first: the ledger rows are COPYed into the ledger itself. When one
        of their change ids is there already (a redelivery, a replay), the batch is
        written again the careful way, which skips those.
        """
        if not changes:
            return []
        encoded = encoded or self._encode(changes)
        cur.execute("SAVEPOINT cdcr_batch")
        written = ApplyResult()
        try:
            try:
                self._write_quick(cur, changes, encoded, written)
            except DriverError as exc:
                if not _known_change(exc):
                    raise
                self._restart(cur)
                written = ApplyResult()
                self._write_careful(cur, changes, encoded, written)
        except DriverError as exc:
            if pg_errors.is_unavailable(exc) or self._missing_partition(exc):
                raise
            self._restart(cur)
            return self._write_row_by_row(cur, changes, encoded, result, first_line(exc))
        cur.execute("RELEASE SAVEPOINT cdcr_batch")
        result.add(written)
        return []

    # The two ways, one method each, so that a test may take one for the other.
    def _write_quick(
        self, cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
    ) -> None:
        writes.write_quick(cur, self.schema, changes, encoded, result)

    def _write_careful(
        self, cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
    ) -> None:
        writes.write_careful(cur, changes, encoded, result)

    def _restart(self, cur: Any) -> None:
        """Back to the batch's savepoint, with empty stages."""
        cur.execute("ROLLBACK TO SAVEPOINT cdcr_batch")
        self._clear_stages(cur)

    def _write_row_by_row(
        self,
        cur: Any,
        changes: list[MappedChange],
        encoded: Encoded,
        result: ApplyResult,
        first_error: str,
    ) -> list[Failure]:
        """Steps 1-5 of `apply.isolate`: one pass, each row alone; rejected keys' changes
        come back as failures. If even this fails on the data (nothing left to blame
        but the batch), every change is quarantined with the error, never retried
        forever."""
        written = ApplyResult()
        try:
            rejected = isolate.write_rows(cur, changes, encoded, written)
        except DriverError as exc:
            if pg_errors.is_unavailable(exc) or self._missing_partition(exc):
                raise
            self._restart(cur)
            detail = (
                "rejected with its batch, which could not be written row by row: "
                f"{first_line(exc)} (first: {first_error})"
            )
            return isolate.failures(changes, lambda _: detail)
        cur.execute("RELEASE SAVEPOINT cdcr_batch")
        result.add(written)
        return isolate.failures(
            changes, lambda change: rejected.get((change.target, change.key_text))
        )

    def _clear_stages(self, cur: Any) -> None:
        cur.execute("TRUNCATE _cdcr_ledger")
        for stage in self._staged:
            cur.execute(f"TRUNCATE {quote_ident(stage)}")

    def _fail(self, exc: DriverError) -> NoReturn:
        """Roll back, drop the connection if it is broken, and raise our error.

        Unavailable (`pg.sqlstate`): `TransientDatabaseError`, and the batch is retried.
        Anything else reached here outside the rows (storing failures or offsets) is a
        fault of ours, not of the data: `ApplyError`, which stops the service with it.
        """
        try:
            if self._fairy is not None:
                self._fairy.rollback()
        except DriverError:
            pass
        if pg_errors.is_unavailable(exc):
            # A broken connection must not go back to the pool (its reset would fail loudly).
            if self._fairy is not None:
                self._fairy.invalidate()
                self._fairy = None
            raise TransientDatabaseError(f"target database: {first_line(exc)}") from exc
        raise ApplyError(f"target database refused the batch: {first_line(exc)}") from exc


class _NoPartition(Exception):
    """A ledger row whose source time no partition holds: the batch is rolled back."""


def _known_change(exc: DriverError) -> bool:
    """Whether the target refused a ledger row because its change id is there already
    (with its source time: the partition's index refuses it, `apply.ledger`)."""
    return pg_errors.is_duplicate(exc, CHANGE_ID_INDEX, partitioned=True)
