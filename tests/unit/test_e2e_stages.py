"""The stage report's verdict (tests/e2e/stages.py): which stage of the pipeline is behind."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stages import StageReport, tail

T = "e2e.s.orders"


def report(**changed: object) -> StageReport:
    readings: dict[str, object] = {
        "changes": 10,
        "deletes": 2,
        "published": {(T, 0): 7, (T, 1): 5},
        "stored": {(T, 0): 7, (T, 1): 5},
        "committed": {(T, 0): 7, (T, 1): 5},
        "ledger": 10,
        "connector": "RUNNING",
    }
    return StageReport(**{**readings, **changed})  # type: ignore[arg-type]


def test_nothing_behind() -> None:
    assert report().verdict().startswith("no stage is behind")


def test_debezium_behind_counts_tombstones() -> None:
    verdict = report(published={(T, 0): 7, (T, 1): 4}).verdict()
    assert verdict.startswith("Debezium -> Kafka") and "11 of the 12" in verdict


def test_cdc_recon_behind_names_the_partition() -> None:
    verdict = report(stored={(T, 0): 7, (T, 1): 3}).verdict()
    assert verdict == "Kafka -> cdc-recon: the target's stored offsets are behind on orders[1] 3/5"


def test_ledger_short_though_read_to_the_end() -> None:
    assert report(ledger=9).verdict().startswith("cdc-recon: read to the end but")


def test_committed_lag_is_a_note_only() -> None:
    verdict = report(committed={(T, 0): 7}).verdict()
    assert verdict.startswith("no stage is behind") and "orders[1] 0/5" in verdict


def test_an_unreadable_stage_is_said() -> None:
    verdict = report(published="unavailable (KafkaException: broker down)").verdict()
    assert verdict.startswith("cannot tell")
    assert "broker down" in report(published="unavailable (broker down)").text()


def test_tail_of_a_missing_log(tmp_path: Path) -> None:
    assert "does not exist" in tail(tmp_path / "nope.log")
    (tmp_path / "a.log").write_text("".join(f"line {i}\n" for i in range(40)))
    assert tail(tmp_path / "a.log", 3).split() == ["line", "37", "line", "38", "line", "39"]
