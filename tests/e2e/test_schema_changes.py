"""Source schema changes with Debezium streaming: ADD COLUMN (with and without a
default) and DROP COLUMN in the middle of a workload; the target converges with no
difference and nothing quarantined (issue 15, deliverable 4)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.e2e.pipeline import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def source_sql(pipeline: Pipeline, *statements: str) -> None:
    with pipeline.source.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(s=f'"{pipeline.source.schema}"')))


def target_columns(pipeline: Pipeline, table: str) -> dict[str, str | None]:
    with pipeline.target.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": f'"{pipeline.target.schema}"."{table}"'},
        ).all()
    return dict(rows)


def test_columns_added_and_dropped_mid_workload_converge(pipeline: Pipeline) -> None:
    service = pipeline.start_service()
    work = pipeline.workload(count=4000, rate=400, seed=5).start()
    pipeline.wait(
        lambda: pipeline.ledger_count() > 400, "cdc-recon to apply the first changes", 120
    )
    source_sql(
        pipeline,
        "ALTER TABLE {s}.accounts ADD COLUMN loyalty integer",
        "ALTER TABLE {s}.accounts ADD COLUMN tier text NOT NULL DEFAULT 'basic'",
        "UPDATE {s}.accounts SET loyalty = id % 7 WHERE id % 3 = 0",
    )
    applied = pipeline.ledger_count()
    pipeline.wait(lambda: pipeline.ledger_count() > applied + 400, "changes after the ALTER", 120)
    source_sql(
        pipeline,
        "ALTER TABLE {s}.accounts DROP COLUMN loyalty",
        "UPDATE {s}.accounts SET tier = 'gold' WHERE id % 5 = 0",
    )
    work.join()
    pipeline.wait_converged()

    assert pipeline.failures() == []
    assert pipeline.diff().ok, pipeline.report()
    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected, (sorted(lost)[:5], sorted(unexpected)[:5])
    columns = target_columns(pipeline, "accounts")
    assert columns["tier"] == "'basic'::text"  # the source's default came with the column
    assert "loyalty" in columns  # dropped on the source, kept (with its values) in the target
    assert service.stop() == 0, service.stderr[-3000:]
    assert service.stderr.count("added column") == 2, service.stderr[-3000:]
