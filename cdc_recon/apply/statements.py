"""The SQL the applier runs for one target table, built once from its reflected shape.

Each target table gets a temporary staging table with the same column types (without
constraints) plus `_key`, `_pos`, `_op`, `_uset` (which columns the row is missing),
`_gap` and `_first` (the key's first position in the batch). A batch's winning rows
are COPYed into it; then, in order:

1. `advance_key_state`: the key_state upsert, guarded by position, and the deletion
   from the stage of every key whose stored position is not older (a concurrent writer
   won); it returns the keys whose ledger lines need a second look. The careful way,
   `advance`, also moves the table's staged ledger lines in, classified against the
   position each key held before;
2. `upsert(missing)`: rows written for each distinct set of missing columns, which are
   left out of the INSERT and the UPDATE so the stored values survive (unchanged TOAST);
3. `delete`: hard delete, or soft delete that sets the flag column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdc_recon.apply.mapping import TargetShape
from cdc_recon.config import TableMapping
from cdc_recon.pg.sql import (
    Encoder,
    change_id_order,
    column_encoders,
    quote_ident,
    quote_table,
)

# COPY data goes to the server in chunks of this size; few chunks means few GIL
# hand-offs for the worker thread while the service's thread decodes the next batch.
COPY_CHUNK = 4 << 20


@dataclass
class TableStatements:
    shape: TargetShape
    mapping: TableMapping
    stage: str
    control_schema: str
    encoders: list[Encoder | None] = field(init=False)
    _upserts: dict[frozenset[int], str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.encoders = column_encoders(
            self.shape.columns, self.shape.json_columns, self.shape.array_columns
        )

    @property
    def table(self) -> str:
        return quote_table(self.shape.table)

    @property
    def stage_columns(self) -> list[str]:
        return [
            *(quote_ident(c) for c in self.shape.columns),
            *("_key", "_pos", "_op", "_uset", "_gap", "_first"),
        ]

    def create_stage(self) -> str:
        columns = ", ".join(quote_ident(c) for c in self.shape.columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(self.stage)} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns}, ''::text AS _key, '{{}}'::bigint[] AS _pos, ''::text AS _op, "
            f"0 AS _uset, false AS _gap, '{{}}'::bigint[] AS _first "
            f"FROM {self.table} WITH NO DATA"
        )

    def copy_stage(self) -> str:
        return f"COPY {quote_ident(self.stage)} ({', '.join(self.stage_columns)}) FROM STDIN"

    def truncate_stage(self) -> str:
        return f"TRUNCATE {quote_ident(self.stage)}"

    def advance_key_state(self, several: bool) -> str:
        """Advance key_state and drop the stage rows of keys that did not advance; returns
        the keys whose `applied` ledger lines (`encode.encode_ledger`) may be wrong,
        with the position each held before: none for a key that did not advance (all are
        superseded), else one at least as new as the key's first change in the batch.

        A key that advanced held a position older than its newest change here, so only
        a key changed more than once in the batch (`_first` set; `several`) can be of
        the second kind: the join looks at those alone, and is left out without them.
        `%(staged)s` is the number of stage rows: when every key advanced (the stream
        moves forward), the anti-join that finds the others is not run at all.
        """
        stage = quote_ident(self.stage)
        sql = (
            f"WITH {self._advanced()}, "
            f"stale AS (DELETE FROM {stage} s WHERE (SELECT count(*) FROM adv) < %(staged)s "
            f"AND NOT EXISTS (SELECT 1 FROM adv WHERE adv.key_text = s._key) RETURNING s._key)"
        )
        if not several:
            return f"{sql} SELECT _key, NULL::bigint[] FROM stale"
        return (
            f"{sql}, several AS (SELECT _key, _first FROM {stage} WHERE _first IS NOT NULL) "
            f"SELECT _key, NULL::bigint[] FROM stale UNION ALL "
            f"SELECT adv.key_text, adv.previous_position FROM several s JOIN adv "
            f"ON adv.key_text = s._key WHERE adv.previous_position >= s._first"
        )

    def _advanced(self) -> str:
        """The CTE `adv`: the key_state upsert, guarded by position."""
        rows = f"SELECT %(table)s, _key, _pos, _op = 'd', _gap FROM {quote_ident(self.stage)}"
        return f"adv AS ({self.key_state_upsert(rows)} RETURNING ks.key_text, ks.previous_position)"

    def key_state_upsert(self, rows: str) -> str:
        """Advance key_state from `rows` (table, key, position, deleted, incomplete) where
        they are newer than the stored position (the guard of P3); no RETURNING."""
        schema = quote_ident(self.control_schema)
        return (
            f"INSERT INTO {schema}.key_state AS ks "
            f"(target_table, key_text, position, deleted, incomplete) {rows} "
            f"ON CONFLICT (target_table, key_text) DO UPDATE SET position = EXCLUDED.position, "
            f"previous_position = ks.position, deleted = EXCLUDED.deleted, updated_at = now(), "
            f"incomplete = CASE WHEN ks.deleted THEN EXCLUDED.incomplete "
            f"ELSE ks.incomplete AND EXCLUDED.incomplete END "
            f"WHERE ks.position < EXCLUDED.position"
        )

    def advance(self) -> str:
        """The careful way (see `Applier`): advance key_state, drop the stage rows of keys
        that did not advance, and move
        this table's staged ledger lines in; returns (op, outcome, count) rows.

        The key_state upsert keeps each advanced key's old position in
        `previous_position` and returns it, so classifying the ledger lines needs no
        second look-up per change. A line is `applied` when its key advanced and it is
        newer than that old position and than every change of the key before it in the
        batch (`late`); `superseded` otherwise (a key that did not advance holds a
        position at least as new as all of its changes here). A change id already in the
        ledger (redelivery, replay) is skipped and counts as a duplicate.
        """
        stage = quote_ident(self.stage)
        return (
            f"WITH {self._advanced()}, "
            f"stale AS (DELETE FROM {stage} s WHERE NOT EXISTS "
            f"(SELECT 1 FROM adv WHERE adv.key_text = s._key)), "
            f"{ledger_move(self.control_schema, 'adv', 'l.target_table = %(table)s')}"
        )

    def upsert(self, missing: frozenset[int]) -> str:
        """Write the stage's non-delete rows whose missing-column set is `missing`."""
        cached = self._upserts.get(missing)
        if cached is not None:
            return cached
        present = self.present(missing)
        quoted = ", ".join(quote_ident(c) for c in present)
        rows = (
            f"SELECT {quoted} FROM {quote_ident(self.stage)} WHERE _op <> 'd' AND _uset = %(uset)s"
        )
        sql = self.row_upsert(present, rows)
        self._upserts[missing] = sql
        return sql

    def present(self, missing: frozenset[int]) -> list[str]:
        """The columns a row lacking `missing` writes (the others keep their values)."""
        return [c for i, c in enumerate(self.shape.columns) if i not in missing]

    def row_upsert(self, present: list[str], rows: str) -> str:
        """INSERT `rows` (values of `present`, in order) or update the row of their key."""
        quoted = ", ".join(quote_ident(c) for c in present)
        keys = ", ".join(quote_ident(c) for c in self.shape.key)
        updates = [c for c in present if c not in self.shape.key]
        assignments = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updates)
        action = f"DO UPDATE SET {assignments}" if updates else "DO NOTHING"
        return f"INSERT INTO {self.table} ({quoted}) {rows} ON CONFLICT ({keys}) {action}"

    def delete(self) -> str:
        match = " AND ".join(f"t.{quote_ident(c)} = s.{quote_ident(c)}" for c in self.shape.key)
        stage = quote_ident(self.stage)
        if self.mapping.delete_mode == "soft":
            flag = quote_ident(self.mapping.soft_delete_column)
            return (
                f"UPDATE {self.table} t SET {flag} = true FROM {stage} s "
                f"WHERE s._op = 'd' AND {match}"
            )
        return f"DELETE FROM {self.table} t USING {stage} s WHERE s._op = 'd' AND {match}"


def ledger_move(schema: str, advanced: str, where: str) -> str:
    """`ins AS (...) SELECT ...`, to follow WITH: the staged ledger lines
    (`_cdcr_ledger l`) matching `where` moved into the ledger, classified against
    `advanced` (key_text, previous_position: the keys that advanced); returns
    (op, outcome, count) rows.

    A line is `applied` when its key advanced and it is newer than that old position
    and than every change of the key before it in the batch (`late`); `superseded`
    otherwise. A change id already in the ledger is skipped: a duplicate (the index
    holds the source time too, the partition key: every delivery of a change carries
    the same, see `cdc_recon.apply.ledger`).
    """
    staged = ", ".join(f"l.{c.strip()}" for c in LEDGER_COLUMNS.split(","))
    return (
        f"ins AS (INSERT INTO {quote_ident(schema)}.ledger ({LEDGER_COLUMNS}, source_ts, "
        f"outcome) SELECT {staged}, {source_ts('l.source_ts_ms')}, "
        f"CASE WHEN adv.key_text IS NOT NULL AND NOT l.late AND (adv.previous_position "
        f"IS NULL OR l.position > adv.previous_position) THEN 'applied' ELSE 'superseded' END "
        f"FROM _cdcr_ledger l LEFT JOIN {advanced} adv ON adv.key_text = l.key_text "
        f"WHERE {where} "
        f"ON CONFLICT ({change_id_order('change_id')}, change_id, source_ts) DO NOTHING "
        f"RETURNING op, outcome) "
        f"SELECT op, outcome, count(*) FROM ins GROUP BY 1, 2"
    )


def source_ts(millis: str) -> str:
    """The ledger's `source_ts` from epoch milliseconds, exactly the instant the COPY
    text of `encode.source_ts_text` names: it is in the ledger's unique index, so a
    change must get the same one on every path. Whole seconds and milliseconds apart:
    `to_timestamp(ms / 1000.0)` goes through microseconds as a float8, which is exact
    only up to year 2255 (2**53 µs)."""
    return f"(to_timestamp({millis} / 1000) + mod({millis}, 1000) * interval '1 millisecond')"


def copy_ledger(schema: str) -> str:
    """COPY straight into the ledger (`encode.encode_ledger`)."""
    return f"COPY {quote_ident(schema)}.ledger ({LEDGER_COLUMNS}, source_ts, outcome) FROM STDIN"


def supersede(schema: str) -> str:
    """Mark the ledger rows of these changes superseded (found through the index):
    `%(ids)s` and their `%(millis)s`, since two changes of one transaction to one key
    share a change id and may carry different source times (two rows)."""
    return (
        f"UPDATE {quote_ident(schema)}.ledger SET outcome = 'superseded' "
        f"WHERE ({change_id_order('change_id')}, change_id, source_ts) IN "
        f"(SELECT {change_id_order('c')}, c, {source_ts('m')} "
        "FROM unnest(%(ids)s::text[], %(millis)s::bigint[]) AS x(c, m))"
    )


def ledger_stage_ddl() -> str:
    return (
        "CREATE TEMP TABLE IF NOT EXISTS _cdcr_ledger (change_id text, source_table text, "
        "target_table text, key_text text, op text, position bigint[], tx text, "
        "source_ts_ms bigint, topic text, kafka_partition int, kafka_offset bigint, "
        "late boolean) ON COMMIT DELETE ROWS"
    )


LEDGER_COLUMNS = (
    "change_id, source_table, target_table, key_text, op, position, tx, source_ts_ms, "
    "topic, kafka_partition, kafka_offset"
)
STAGE_LEDGER_COLUMNS = f"{LEDGER_COLUMNS}, late"


def store_offsets(schema: str) -> str:
    return (
        f"INSERT INTO {quote_ident(schema)}.offsets (group_id, topic, kafka_partition, "
        "next_offset) SELECT %(group)s, t, p, o FROM unnest(%(topics)s::text[], "
        "%(partitions)s::int[], %(offsets)s::bigint[]) AS x(t, p, o) "
        "ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET "
        "next_offset = EXCLUDED.next_offset, updated_at = now()"
    )


def insert_failures(schema: str) -> str:
    return (
        f"INSERT INTO {quote_ident(schema)}.failures (topic, kafka_partition, kafka_offset, "
        "raw_key, raw_value, reason, detail, source_table) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING"
    )


def read_offsets(schema: str) -> str:
    return (
        f"SELECT topic, kafka_partition, next_offset FROM {quote_ident(schema)}.offsets "
        "WHERE group_id = %(group)s"
    )
