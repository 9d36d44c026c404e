"""How long `cdc-recon init` takes to convert an unpartitioned ledger of `--rows` rows.

Builds the previous version's ledger (one table, its unique index on
`(split_part(change_id, ':', -1), change_id)` and the BRIN on source_ts) with SQL,
`--rows` rows over the last `--days` days, vacuums it, then times `init_control_schema`
and its conversion (`apply.ledger_convert`). Last line:
`RESULT ledger_convert rows=<n> convert_s=<x> init_s=<x>`.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/ledger_convert.py --rows 10000000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

OLD_LEDGER = (
    "(change_id text NOT NULL, source_table text NOT NULL, target_table text NOT NULL, "
    "key_text text NOT NULL, op text NOT NULL, position bigint[] NOT NULL, tx text, "
    "source_ts_ms bigint NOT NULL, source_ts timestamptz NOT NULL, topic text, "
    "kafka_partition int, kafka_offset bigint, outcome text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now())"
)


def old_ledger(engine: sa.Engine, schema: str, rows: int, days: int) -> float:
    started = time.monotonic()
    s = f'"{schema}"'
    span = days * 86_400_000
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {s}.ledger"))
        conn.execute(sa.text(f"CREATE TABLE {s}.ledger {OLD_LEDGER}"))
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.ledger (change_id, source_table, target_table, key_text, op, "
                "position, tx, source_ts_ms, source_ts, topic, kafka_partition, kafka_offset, "
                "outcome) SELECT 'public.customers:[\"' || (i % 50000) || '\"]:' || i, "
                "'public.customers', 'public.customers', '[\"' || (i % 50000) || '\"]', 'u', "
                "ARRAY[i], i::text, t, to_timestamp(t / 1000) + mod(t, 1000) * interval '1 ms', "
                "'bench', 0, i, 'applied' FROM generate_series(1, :n) i, "
                "LATERAL (SELECT (extract(epoch FROM now()) * 1000)::bigint - :span "
                "+ i * (:span / :n) AS t) x"
            ),
            {"n": rows, "span": span},
        )
        conn.execute(
            sa.text(
                f"CREATE UNIQUE INDEX ledger_change_id ON {s}.ledger "
                "(split_part(change_id, ':', -1), change_id)"
            )
        )
        conn.execute(sa.text(f"CREATE INDEX ledger_source_ts ON {s}.ledger USING brin (source_ts)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {s}.ledger"))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    engine = create_engine(url)
    schema = f"bench_convert_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        init_control_schema(engine, schema)
        print(f"building an unpartitioned ledger of {args.rows} rows ...", flush=True)
        built = old_ledger(engine, schema, args.rows, args.days)
        print(f"  built in {built:.0f} s", flush=True)
        converted: list[Any] = []
        started = time.monotonic()
        init_control_schema(engine, schema, converted=converted)
        init_s = time.monotonic() - started
        (done,) = converted
        with engine.connect() as conn:
            kept = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".ledger')).scalar()
        print(f"converted: {done.rows} rows kept as {done.partition} [{done.start}, {done.end})")
        print(f"  conversion {done.seconds:.1f} s, init in all {init_s:.1f} s; {kept} rows read")
        print(
            f"RESULT ledger_convert rows={done.rows} convert_s={done.seconds:.1f} "
            f"init_s={init_s:.1f}"
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
