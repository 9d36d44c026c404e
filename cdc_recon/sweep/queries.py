"""SQL of the window sweeper in the TARGET database: its control tables and the anti-join.

Control tables (created by `cdc-recon init`, and by the sweeper when absent):

    sweeper_watermark  per pipeline (group id) and adapter: the end of the last window
                       checked; the next run starts there
    sweep_runs         one row per run: window, counts per class, duration, status
    missed_changes     one row per missed change id: where it came from, why it is missed,
                       and its replay status (pending | replayed | failed)
    sweep_completeness per pipeline, adapter and source table: the source changes of the
                       windows behind the watermark, by class (`cdc_recon.sweep.completeness`)

A sweep step loads the window's source changes into the temporary stage `_cdcr_sweep`
(COPY), then, set-based:

1. `open_entries`: the stage entries whose change id is not in the ledger (a hash or
   index anti-join on the ledger's primary key) go to `_cdcr_open`;
2. `classify`: each open entry becomes applied (replayed by an earlier sweep, or a
   quarantined message an operator retried or resolved: accounted for, counted with
   the applied ones; `cdc_recon.apply.failures`),
   superseded (its key's `key_state.position` is newer and its row is complete),
   in_flight (too recent, not yet consumed, or beyond what the consumer has applied while
   it lags) or missed;
3. `record_missed`: the missed ones go to `missed_changes`, one row per change id.

The Debezium transaction adapter stages transactions instead (`_cdcr_sweep_tx`) and
compares each one's event count per table with the ledger's (`classify_transactions`).
"""

from __future__ import annotations

from cdc_recon.pg.sql import change_id_order, quote_ident

SWEEPER_TABLES = ("sweeper_watermark", "sweep_runs", "missed_changes", "sweep_completeness")
STAGE = "_cdcr_sweep"
STAGE_TX = "_cdcr_sweep_tx"
OPEN = "_cdcr_open"
# The trigger log sends the change id whole (computed by the source) and the table as its
# 1-based index in the mapped sources: the target parses no array and concatenates
# nothing for the (many) entries that turn out applied.
TRIGGER_COLUMNS = "change_id, table_no, lsn, changed_at, log_id"
KAFKA_COLUMNS = (
    "change_id, source_table, key_text, tx, position, changed_at, "
    "topic, kafka_partition, kafka_offset"
)
TX_COLUMNS = "tx, source_table, event_count, position, changed_at, tx_label"
MISSED_COLUMNS = (
    "change_id, source_table, key_text, tx, position, changed_at, "
    "topic, kafka_partition, kafka_offset"
)


def sweeper_ddl(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.sweeper_watermark (
            pipeline text NOT NULL,
            adapter text NOT NULL,
            swept_until timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (pipeline, adapter))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.sweep_runs (
            id bigserial PRIMARY KEY,
            pipeline text NOT NULL,
            adapter text NOT NULL,
            window_from timestamptz,
            window_to timestamptz,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            duration_s double precision,
            status text NOT NULL,
            applied bigint NOT NULL DEFAULT 0,
            superseded bigint NOT NULL DEFAULT 0,
            missed bigint NOT NULL DEFAULT 0,
            in_flight bigint NOT NULL DEFAULT 0,
            replayed bigint NOT NULL DEFAULT 0,
            replay_failed bigint NOT NULL DEFAULT 0,
            detail text)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.missed_changes (
            change_id text PRIMARY KEY,
            adapter text NOT NULL,
            source_table text,
            key_text text,
            tx text,
            position bigint[],
            changed_at timestamptz,
            topic text,
            kafka_partition int,
            kafka_offset bigint,
            reason text NOT NULL,
            replayable boolean NOT NULL,
            run_id bigint,
            found_at timestamptz NOT NULL DEFAULT now(),
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'replayed', 'failed')),
            attempts int NOT NULL DEFAULT 0,
            last_error text,
            replayed_at timestamptz)""",
        f"CREATE INDEX IF NOT EXISTS missed_changes_pending ON {s}.missed_changes (found_at) "
        "WHERE status = 'pending'",
        # Counted once per change: only what lies behind the watermark the same step
        # stores (the rest is staged again by the next run). One row per table.
        f"""CREATE TABLE IF NOT EXISTS {s}.sweep_completeness (
            pipeline text NOT NULL,
            adapter text NOT NULL,
            source_table text NOT NULL,
            verified bigint NOT NULL DEFAULT 0,
            applied bigint NOT NULL DEFAULT 0,
            superseded bigint NOT NULL DEFAULT 0,
            missed bigint NOT NULL DEFAULT 0,
            since timestamptz NOT NULL,
            swept_until timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (pipeline, adapter, source_table))""",
    ]


# -- one sweeper at a time, and where it stopped -------------------------------------------

LOCK_KEY = "hashtext('cdc_recon.sweeper'), hashtext(%(schema)s)"


def try_lock() -> str:
    """A session lock on a key fixed per control schema, held for the whole run."""
    return f"SELECT pg_try_advisory_lock({LOCK_KEY})"


def unlock() -> str:
    return f"SELECT pg_advisory_unlock({LOCK_KEY})"


def read_watermark(schema: str) -> str:
    return (
        f"SELECT swept_until FROM {quote_ident(schema)}.sweeper_watermark "
        "WHERE pipeline = %(pipeline)s AND adapter = %(adapter)s"
    )


def store_watermark(schema: str) -> str:
    """Advance (never move back) the watermark of a pipeline and adapter."""
    return (
        f"INSERT INTO {quote_ident(schema)}.sweeper_watermark AS w "
        "(pipeline, adapter, swept_until) VALUES (%(pipeline)s, %(adapter)s, %(until)s) "
        "ON CONFLICT (pipeline, adapter) DO UPDATE SET swept_until = EXCLUDED.swept_until, "
        "updated_at = now() WHERE w.swept_until < EXCLUDED.swept_until"
    )


def start_run(schema: str) -> str:
    return (
        f"INSERT INTO {quote_ident(schema)}.sweep_runs (pipeline, adapter, status) "
        "VALUES (%(pipeline)s, %(adapter)s, 'running') RETURNING id"
    )


def finish_run(schema: str) -> str:
    return (
        f"UPDATE {quote_ident(schema)}.sweep_runs SET window_from = %(window_from)s, "
        "window_to = %(window_to)s, finished_at = now(), duration_s = %(duration)s, "
        "status = %(status)s, applied = %(applied)s, superseded = %(superseded)s, "
        "missed = %(missed)s, in_flight = %(in_flight)s, replayed = %(replayed)s, "
        "replay_failed = %(replay_failed)s, detail = %(detail)s WHERE id = %(run_id)s"
    )


# -- the stage and the anti-join -----------------------------------------------------------


def session_settings() -> str:
    """Memory for one hash anti-join over a window (temp_buffers before any temp table);
    no JIT, whose compile time is paid on every step and rarely won back."""
    return "SET temp_buffers = '256MB'; SET work_mem = '256MB'; SET jit = off; SET TIME ZONE 'UTC'"


def create_stage() -> list[str]:
    return [
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE} (
            change_id text NOT NULL, table_no int, lsn bigint, log_id bigint,
            source_table text, key_text text, tx text, position bigint[],
            changed_at timestamptz, topic text, kafka_partition int, kafka_offset bigint)""",
        f"""CREATE TEMP TABLE IF NOT EXISTS {OPEN} (
            n bigint GENERATED BY DEFAULT AS IDENTITY,
            change_id text NOT NULL, source_table text, key_text text, tx text,
            position bigint[], changed_at timestamptz,
            topic text, kafka_partition int, kafka_offset bigint,
            class text, reason text, replayable boolean)""",
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE_TX} (
            tx text NOT NULL, source_table text NOT NULL, event_count int NOT NULL,
            position bigint[], changed_at timestamptz NOT NULL, tx_label text NOT NULL)""",
    ]


def clear_stage() -> str:
    return f"TRUNCATE {STAGE}, {OPEN}, {STAGE_TX}"


def copy_stage(columns: str) -> str:
    return f"COPY {STAGE} ({columns}) FROM STDIN"


def copy_stage_tx() -> str:
    return f"COPY {STAGE_TX} ({TX_COLUMNS}) FROM STDIN"


def open_entries(schema: str) -> str:
    """Stage entries whose change id is not in the ledger. Entries staged by change id
    and table number (the trigger log) get their table, key and xid back from the id:
    `table:key:tx`, where the table is known and the xid has no colon. Parameter: sources,
    the mapped source tables in the order the adapter numbered them."""
    table = "coalesce(s.source_table, (%(sources)s::text[])[s.table_no])"
    tx = "coalesce(s.tx, substring(s.change_id from '[^:]*$'))"
    key = (
        f"coalesce(s.key_text, substr(s.change_id, length({table}) + 2, "
        f"length(s.change_id) - length({table}) - length({tx}) - 2))"
    )
    return (
        f"INSERT INTO {OPEN} ({MISSED_COLUMNS}) "
        f"SELECT s.change_id, {table}, {key}, {tx}, coalesce(s.position, ARRAY[s.lsn]), "
        "s.changed_at, s.topic, s.kafka_partition, s.kafka_offset "
        f"FROM {STAGE} s WHERE NOT EXISTS "
        f"(SELECT 1 FROM {quote_ident(schema)}.ledger l WHERE "
        f"{change_id_order('l.change_id')} = {change_id_order('s.change_id')} "
        "AND l.change_id = s.change_id)"
    )


def _horizon(schema: str) -> str:
    """Per source table, the newest position the consumer applied since the window began
    (only computed while the consumer lags)."""
    return (
        "SELECT source_table, max(position) AS position "
        f"FROM {quote_ident(schema)}.ledger WHERE NOT %(caught_up)s "
        "AND source_ts >= %(window_from)s "
        f"AND source_table IN (SELECT DISTINCT source_table FROM {OPEN}) GROUP BY source_table"
    )


def classify(schema: str) -> str:
    """Give each open entry its class and reason. Parameters: sources/targets (the table
    mapping), group, open_after (entries from then on are in flight), caught_up,
    window_from."""
    s = quote_ident(schema)
    return f"""
WITH map AS (SELECT unnest(%(sources)s::text[]) AS source, unnest(%(targets)s::text[]) AS target),
horizon AS ({_horizon(schema)}),
judged AS (
    SELECT o.n, CASE
        WHEN m.status = 'replayed' THEN 'applied'
        WHEN f.status IN ('retried', 'resolved') THEN 'applied'
        WHEN ks.position > o.position AND NOT ks.incomplete THEN 'superseded'
        WHEN o.changed_at >= %(open_after)s THEN 'in_flight'
        WHEN o.topic IS NOT NULL AND f.id IS NULL
             AND (off.next_offset IS NULL OR o.kafka_offset >= off.next_offset) THEN 'in_flight'
        WHEN o.topic IS NULL AND h.position IS NOT NULL AND o.position > h.position
             THEN 'in_flight'
        WHEN o.topic IS NULL AND NOT %(caught_up)s AND h.position IS NULL THEN 'in_flight'
        ELSE 'missed' END AS class,
    CASE
        WHEN f.id IS NOT NULL THEN 'quarantined (' || f.reason || '): ' || f.detail
        WHEN o.topic IS NOT NULL THEN 'skipped: the consumer moved past it'
        WHEN map.target IS NULL THEN 'not in the ledger; table is not mapped'
        ELSE 'not in the ledger' END AS reason,
    map.target IS NOT NULL AND o.key_text IS NOT NULL AS replayable
    FROM {OPEN} o
    LEFT JOIN map ON map.source = o.source_table
    LEFT JOIN {s}.missed_changes m ON m.change_id = o.change_id
    LEFT JOIN {s}.key_state ks ON ks.target_table = map.target AND ks.key_text = o.key_text
    LEFT JOIN {s}.offsets off ON off.group_id = %(group)s AND off.topic = o.topic
        AND off.kafka_partition = o.kafka_partition
    LEFT JOIN {s}.failures f ON f.topic = o.topic AND f.kafka_partition = o.kafka_partition
        AND f.kafka_offset = o.kafka_offset
    LEFT JOIN horizon h ON h.source_table = o.source_table)
UPDATE {OPEN} o SET class = j.class, reason = j.reason, replayable = j.replayable
FROM judged j WHERE j.n = o.n"""


def analyze_open() -> str:
    return f"ANALYZE {OPEN}"


def open_counts() -> str:
    """Open entries per class, and the earliest in-flight change (holds the watermark)."""
    return (
        f"SELECT class, count(*), min(changed_at) FILTER (WHERE class = 'in_flight') "
        f"FROM {OPEN} GROUP BY class"
    )


def missed_ids(limit: int) -> str:
    return (
        f"SELECT DISTINCT change_id FROM {OPEN} WHERE class = 'missed' "
        f"ORDER BY change_id LIMIT {int(limit)}"
    )


def record_missed(schema: str) -> str:
    """One `missed_changes` row per missed change id (the newest entry of the id wins);
    a change id already recorded keeps its row and status."""
    return (
        f"INSERT INTO {quote_ident(schema)}.missed_changes "
        f"({MISSED_COLUMNS}, adapter, reason, replayable, run_id) "
        f"SELECT DISTINCT ON (change_id) {MISSED_COLUMNS}, %(adapter)s, reason, replayable, "
        f"%(run_id)s FROM {OPEN} WHERE class = 'missed' "
        "ORDER BY change_id, position DESC NULLS LAST "
        "ON CONFLICT (change_id) DO NOTHING"
    )


# -- Debezium transaction metadata ---------------------------------------------------------


def classify_transactions(schema: str) -> str:
    """Per staged (transaction, table): complete, in flight, or short of its event count.

    The ledger rows of a transaction are found by its xid among the rows applied since
    `%(ledger_from)s` (the ledger's BRIN on source time keeps this a range scan).
    """
    s = quote_ident(schema)
    return f"""
WITH counted AS (
    SELECT l.tx, l.source_table, count(*) AS n FROM {s}.ledger l
    WHERE l.source_ts >= %(ledger_from)s AND l.tx IN (SELECT tx FROM {STAGE_TX})
    GROUP BY l.tx, l.source_table),
horizon AS (
    SELECT source_table, max(position) AS position FROM {s}.ledger
    WHERE NOT %(caught_up)s AND source_ts >= %(ledger_from)s
    AND source_table IN (SELECT DISTINCT source_table FROM {STAGE_TX}) GROUP BY source_table)
INSERT INTO {OPEN} (change_id, source_table, key_text, tx, position, changed_at,
                    class, reason, replayable)
SELECT t.source_table || ':*:' || t.tx, t.source_table, '*', t.tx, t.position, t.changed_at,
    CASE WHEN coalesce(c.n, 0) >= t.event_count THEN 'applied'
         WHEN t.changed_at >= %(open_after)s THEN 'in_flight'
         WHEN NOT %(caught_up)s AND (h.position IS NULL OR t.position > h.position)
              THEN 'in_flight'
         ELSE 'missed' END,
    'transaction ' || t.tx_label || ': ' || coalesce(c.n, 0) || ' of ' || t.event_count
        || ' events in the ledger',
    false
FROM {STAGE_TX} t
LEFT JOIN counted c ON c.tx = t.tx AND c.source_table = t.source_table
LEFT JOIN horizon h ON h.source_table = t.source_table"""


# -- replay bookkeeping --------------------------------------------------------------------


def closed_failure(schema: str, missed: str) -> str:
    """Whether the `missed` entry's message is a failure an operator retried or resolved:
    accounted for, never replayed again (a resolved one stays unapplied)."""
    return (
        f"EXISTS (SELECT 1 FROM {quote_ident(schema)}.failures f WHERE f.topic = {missed}.topic "
        f"AND f.kafka_partition = {missed}.kafka_partition "
        f"AND f.kafka_offset = {missed}.kafka_offset AND f.status <> 'open')"
    )


def pending_missed(schema: str) -> str:
    return (
        f"SELECT {MISSED_COLUMNS} FROM {quote_ident(schema)}.missed_changes m "
        f"WHERE status = 'pending' AND replayable AND NOT {closed_failure(schema, 'm')} "
        "ORDER BY found_at, change_id LIMIT %(limit)s"
    )


def store_outcomes(schema: str) -> str:
    """Set each change id's replay status; `replayed_at` when it was replayed."""
    return (
        f"UPDATE {quote_ident(schema)}.missed_changes m SET status = o.status, "
        "attempts = m.attempts + 1, last_error = nullif(o.detail, ''), "
        "replayed_at = CASE WHEN o.status = 'replayed' THEN now() ELSE m.replayed_at END "
        "FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(details)s::text[]) "
        "AS o(change_id, status, detail) WHERE m.change_id = o.change_id"
    )
