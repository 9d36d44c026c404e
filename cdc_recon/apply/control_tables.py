"""The control tables cdc_recon keeps in the target database, created by `cdc-recon init`.

    ledger      one row per applied change (unique change id), with its source position,
                Kafka coordinates and outcome (applied | superseded); partitioned by
                source time (`cdc_recon.apply.ledger`)
    key_state   per target key: the newest source position applied, whether the key
                is deleted (so that an older update can never bring a row back, P3),
                and whether its row still lacks unchanged-TOAST columns
    offsets     per consumer group and partition: the next offset to read, written in
                the same transaction as the rows (P4)
    failures    quarantined messages with raw bytes, reason and Kafka coordinates (P5),
                what became of each one's dead letter (`cdc_recon.apply.dead_letters`),
                and what an operator did with it: open | retried | resolved, with the
                note, the retries and their outcome (`cdc_recon.apply.failures`)

The sweeper's tables (`cdc_recon.sweep.queries`) and reconciliation's
(`cdc_recon.reconcile.store`) are their own; `cdc_recon.control_schema` creates all of
them.

Every statement is idempotent: `init` may run any number of times.
"""

from __future__ import annotations

from cdc_recon.apply.ledger_plan import CHANGE_ID_INDEX
from cdc_recon.pg.sql import change_id_order, quote_ident

CONTROL_TABLES = ("ledger", "key_state", "offsets", "failures")
# What control tables created by an earlier version lack until `init` runs again:
# (table, column or index, the kind) the applier's statements rely on.
UPGRADES = (
    ("key_state", "incomplete", "column"),
    ("key_state", "previous_position", "column"),
    ("ledger", "ledger_change_id", "index"),
    ("ledger", "source_ts", "plain (not generated) column"),
    ("failures", "dead_letter", "column"),
    ("failures", "dead_letter_detail", "column"),
    ("failures", "note", "column"),
    ("failures", "retried_at", "column"),
    ("failures", "attempts", "column"),
    ("failures", "retry_outcome", "column"),
    ("failures", "failures_status", "index"),
)


LEDGER_COLUMNS_DDL = """
            change_id text NOT NULL,
            source_table text NOT NULL,
            target_table text NOT NULL,
            key_text text NOT NULL,
            op text NOT NULL,
            position bigint[] NOT NULL,
            tx text,
            source_ts_ms bigint NOT NULL,
            source_ts timestamptz NOT NULL,
            topic text,
            kafka_partition int,
            kafka_offset bigint,
            outcome text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()"""


def ledger_ddl(schema: str) -> list[str]:
    """The ledger, partitioned by source time; its partitions are made by
    `cdc_recon.apply.ledger` (ahead, and on demand), an unpartitioned ledger of an
    earlier version is converted by `cdc_recon.apply.ledger_convert` before this runs.

    source_ts is written by the applier with each row, from source_ts_ms (COPY text, or
    its INSERT on the careful way); as a generated column it cost ~15 % of every ledger
    insert. It is the partition key: every delivery of a change carries the same one.
    """
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE IF NOT EXISTS {s}.ledger ({LEDGER_COLUMNS_DDL}) "
        "PARTITION BY RANGE (source_ts)",
        # BRIN: each partition grows in roughly source-time order and the sweeper reads
        # windows. Each partition has its own, named after it.
        f"CREATE INDEX IF NOT EXISTS ledger_source_ts ON {s}.ledger USING brin (source_ts)",
        # Unique change ids (P2), keyed by transaction first (see `change_id_order`), and
        # the partition key, as PostgreSQL requires of a partitioned table's unique
        # index: see `cdc_recon.apply.ledger` for why this keeps ids unique.
        f"CREATE UNIQUE INDEX IF NOT EXISTS {CHANGE_ID_INDEX} ON {s}.ledger "
        f"({change_id_order('change_id')}, change_id, source_ts)",
    ]


def control_ddl(schema: str) -> list[str]:
    """The other control tables (run after `ledger_ddl`)."""
    s = quote_ident(schema)
    return [
        f"""CREATE TABLE IF NOT EXISTS {s}.key_state (
            target_table text NOT NULL,
            key_text text NOT NULL,
            position bigint[] NOT NULL,
            deleted boolean NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (target_table, key_text))""",
        # Every applied change rewrites its key's row: with free room on each page the
        # new version stays on the page and skips the index (a HOT update), ~40 % less
        # work per change than on full pages. Set again for tables created before.
        f"ALTER TABLE {s}.key_state SET (fillfactor = 50)",
        # A key whose row the target created from an image lacking unchanged-TOAST columns
        # is incomplete: an older lost change of it is not superseded (the sweeper
        # replays it from the source) until a complete image arrives.
        f"ALTER TABLE {s}.key_state ADD COLUMN IF NOT EXISTS "
        "incomplete boolean NOT NULL DEFAULT false",
        # The position the key held before its last advance: the applier classifies a
        # batch's changes against it without looking each one up again.
        f"ALTER TABLE {s}.key_state ADD COLUMN IF NOT EXISTS previous_position bigint[]",
        f"""CREATE TABLE IF NOT EXISTS {s}.offsets (
            group_id text NOT NULL,
            topic text NOT NULL,
            kafka_partition int NOT NULL,
            next_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, kafka_partition))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.failures (
            id bigserial PRIMARY KEY,
            topic text NOT NULL,
            kafka_partition int NOT NULL,
            kafka_offset bigint NOT NULL,
            raw_key bytea,
            raw_value bytea,
            reason text NOT NULL,
            detail text NOT NULL,
            source_table text,
            status text NOT NULL DEFAULT 'open',
            created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz,
            UNIQUE (topic, kafka_partition, kafka_offset))""",
        # The dead letter's state: pending (stored, not yet confirmed on the topic), sent,
        # too_large or refused (no dead letter: the row keeps the bytes, the detail says
        # why). The applier inserts rows without it: the default makes them pending.
        # Rows stored before this column existed become pending too: nothing recorded
        # whether their dead letter arrived (and before it, a too large one stopped the
        # rest of its batch), so the service sends them again, once; the topic's
        # consumers deduplicate by the coordinate headers anyway.
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS dead_letter text NOT NULL "
        "DEFAULT 'pending' "
        "CHECK (dead_letter IN ('pending', 'sent', 'too_large', 'refused'))",
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS dead_letter_detail text",
        # The service looks for pending rows with every few batches: the index holds
        # only them, so it stays as small as the backlog.
        f"CREATE INDEX IF NOT EXISTS failures_dead_letter_pending ON {s}.failures (id) "
        "WHERE dead_letter = 'pending'",
        # What an operator did with a failure (`cdc-recon failures`): `status` goes from
        # open to retried (a retry applied it, found it superseded or already applied:
        # retry_outcome) or resolved (closed unapplied, `note` says why). A retry that
        # fails again keeps the row open with the new reason; `attempts` counts retries.
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS note text",
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS retried_at timestamptz",
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS attempts int NOT NULL DEFAULT 0",
        f"ALTER TABLE {s}.failures ADD COLUMN IF NOT EXISTS retry_outcome text",
        # Lists and counts by status (the open ones, mostly), paged by id.
        f"CREATE INDEX IF NOT EXISTS failures_status ON {s}.failures (status, id)",
    ]
