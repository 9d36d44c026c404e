"""SQL of the sweeper in the TARGET database for a MariaDB change log (`mariadb_trigger`).

A MariaDB trigger cannot see its transaction's GTID, so its entries carry no change id
and the anti-join by change id of `cdc_recon.sweep.queries` cannot be used. The adapter
stages the window's entries counted per identity (table, key_text, op, second) into
`_cdcr_sweep_counts`; `classify_counts` then compares each count N with the count M of
ledger rows of the same source_table, key_text, op and floor(source_ts_ms / 1000) (the
whole window's ledger rows are counted in one range scan of its BRIN on source time),
and writes one `_cdcr_open` row per change short (N - M of them), each with the change
id `table:key:op@second#k` (k = 1..N-M), so that a replayed one is recognised by the next
sweep. Each short change is then:

- applied: replayed by an earlier sweep (its id is `replayed` in `missed_changes`);
- superseded: the ledger holds a streamed change (not a re-read) of the same key from a
  later second, which the connector emitted after it (the row lock orders two changes
  of one key; a statement's second is when it started);
- in flight: in a second from `open_after` on, or, while the group lags, not older than
  the newest second the consumer applied of its table since the window began;
- missed.

The adapter then looks the missed ones up in Kafka (`missed_identities`, `locate`).
"""

from __future__ import annotations

from cdc_recon.pg.sql import change_id_order, quote_ident
from cdc_recon.sweep.queries import OPEN

STAGE_COUNTS = "_cdcr_sweep_counts"
COUNT_COLUMNS = "source_table, key_text, op, second, n"


def create_stage() -> list[str]:
    return [
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE_COUNTS} (
            source_table text NOT NULL, key_text text NOT NULL, op text NOT NULL,
            second bigint NOT NULL, n int NOT NULL)""",
        f"TRUNCATE {STAGE_COUNTS}",
    ]


def copy_counts() -> str:
    return f"COPY {STAGE_COUNTS} ({COUNT_COLUMNS}) FROM STDIN"


def log_change_id() -> str:
    """The SQL of a short change's id: `table:key:op@second#k`."""
    return "s.source_table || ':' || s.key_text || ':' || s.op || '@' || s.second || '#' || k"


def classify_counts(schema: str) -> str:
    """Write the short changes of the staged counts to `_cdcr_open`, classified.

    Parameters: sources/targets (the mapping), from_s/to_s (the window in epoch seconds),
    window_from (where the consumer's horizon is measured from), open_after, caught_up.
    """
    s = quote_ident(schema)
    return f"""
WITH map AS (SELECT unnest(%(sources)s::text[]) AS source, unnest(%(targets)s::text[]) AS target),
applied AS (
    SELECT source_table, key_text, op, source_ts_ms / 1000 AS second, count(*) AS m
    FROM {s}.ledger WHERE source_ts >= to_timestamp(%(from_s)s)
    AND source_ts < to_timestamp(%(to_s)s) AND source_table = ANY(%(sources)s)
    GROUP BY 1, 2, 3, 4),
short AS (
    SELECT c.source_table, c.key_text, c.op, c.second, c.n, coalesce(a.m, 0) AS m
    FROM {STAGE_COUNTS} c LEFT JOIN applied a ON a.source_table = c.source_table
    AND a.key_text = c.key_text AND a.op = c.op AND a.second = c.second
    WHERE c.n > coalesce(a.m, 0)),
newest AS (
    SELECT l.source_table, l.key_text, max(l.source_ts_ms) / 1000 AS second
    FROM {s}.ledger l WHERE l.source_ts >= to_timestamp(%(from_s)s) AND l.op <> 'r'
    AND (l.source_table, l.key_text) IN (SELECT source_table, key_text FROM short)
    GROUP BY 1, 2),
horizon AS (
    SELECT source_table, max(source_ts_ms) / 1000 AS second FROM {s}.ledger
    WHERE NOT %(caught_up)s AND source_ts >= %(window_from)s
    AND source_table IN (SELECT source_table FROM short) GROUP BY 1),
expanded AS (
    SELECT s.*, {log_change_id()} AS change_id FROM short s, generate_series(1, s.n - s.m) k)
INSERT INTO {OPEN} (change_id, source_table, key_text, changed_at, class, reason, replayable)
SELECT e.change_id, e.source_table, e.key_text, to_timestamp(e.second),
    CASE WHEN mc.status = 'replayed' THEN 'applied'
         WHEN nw.second > e.second THEN 'superseded'
         WHEN to_timestamp(e.second) >= %(open_after)s THEN 'in_flight'
         WHEN NOT %(caught_up)s AND (h.second IS NULL OR e.second >= h.second) THEN 'in_flight'
         ELSE 'missed' END,
    'not in the ledger: ' || e.m || ' of ' || e.n || ' change(s) of op ' || e.op
        || ' in second ' || e.second || ' of the change log',
    map.target IS NOT NULL
FROM expanded e
LEFT JOIN map ON map.source = e.source_table
LEFT JOIN {s}.missed_changes mc ON mc.change_id = e.change_id
LEFT JOIN newest nw ON nw.source_table = e.source_table AND nw.key_text = e.key_text
LEFT JOIN horizon h ON h.source_table = e.source_table"""


def missed_identities() -> str:
    """The missed short changes: n, change id, table, key (the op and second are in the id)."""
    return (
        f"SELECT n, change_id, source_table, key_text FROM {OPEN} "
        "WHERE class = 'missed' ORDER BY change_id"
    )


def in_ledger(schema: str) -> str:
    """Which of `%(ids)s` the ledger holds (by its unique index)."""
    return (
        f"SELECT l.change_id FROM {quote_ident(schema)}.ledger l "
        "JOIN unnest(%(ids)s::text[]) AS i(change_id) "
        f"ON {change_id_order('l.change_id')} = {change_id_order('i.change_id')} "
        "AND l.change_id = i.change_id"
    )


def locate(schema: str) -> str:
    """Give a missed change its real change id and Kafka coordinates, found in Kafka, and
    the reason of the consumer's quarantine when the message is in `failures`: one an
    operator retried or resolved is accounted for (applied), as for `kafka_topic`."""
    return f"""
UPDATE {OPEN} o SET change_id = m.change_id, tx = m.tx, position = m.position::bigint[],
    topic = m.topic, kafka_partition = m.kafka_partition, kafka_offset = m.kafka_offset,
    class = CASE WHEN q.status IN ('retried', 'resolved') THEN 'applied' ELSE o.class END,
    reason = CASE WHEN q.id IS NOT NULL THEN 'quarantined (' || q.reason || '): ' || q.detail
             ELSE 'skipped: in Kafka, ' || o.reason END
FROM unnest(%(n)s::bigint[], %(ids)s::text[], %(txs)s::text[], %(positions)s::text[],
    %(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[])
    AS m(n, change_id, tx, position, topic, kafka_partition, kafka_offset)
LEFT JOIN {quote_ident(schema)}.failures q ON q.topic = m.topic
    AND q.kafka_partition = m.kafka_partition AND q.kafka_offset = m.kafka_offset
WHERE o.n = m.n"""
