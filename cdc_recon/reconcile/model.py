"""The values reconciliation works with: row images, row differences, findings, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

MISSING: Final = "missing"
EXTRA: Final = "extra"
MISMATCH: Final = "mismatch"
PASS: Final = "PASS"
FAIL: Final = "FAIL"
ERROR: Final = "ERROR"
CHECKS = (
    "counts", "checksums", "rules", "sample", "schema", "integrity", "temporal", "anomalies",
)  # fmt: skip
Severity = Literal["low", "medium", "high", "critical"]
SEVERITY: dict[str, Severity] = {
    MISSING: "high",
    EXTRA: "medium",
    MISMATCH: "high",
    "count": "high",
    "schema": "medium",
    "orphan": "high",
    "stale": "medium",
    "ahead": "low",
    "future": "low",
    "sample": "medium",
    "rule": "high",
    "anomaly": "medium",
}


@dataclass(frozen=True)
class RowImage:
    """One row as compared: its key as canonical JSON text, its normalised column texts
    (in the comparison's column order) and its row hash as computed in its database."""

    key: str
    values: tuple[str | None, ...]
    hash: str

    def __post_init__(self) -> None:
        if not self.key.startswith("["):
            raise ValueError(f"key must be a JSON array text, got {self.key!r}")


@dataclass(frozen=True)
class RowDiff:
    """A key whose rows differ: missing (only in the source), extra (only in the target)
    or mismatch (both, with the differing columns and both sides' values)."""

    kind: Literal["missing", "extra", "mismatch"]
    key: str
    columns: tuple[str, ...] = ()
    source_values: tuple[str | None, ...] = ()
    target_values: tuple[str | None, ...] = ()
    target_hash: str | None = None

    def __post_init__(self) -> None:
        if self.kind == MISMATCH and not self.columns:
            raise ValueError("a mismatch names its differing columns")
        if len(self.source_values) != len(self.target_values):
            raise ValueError("source and target values must pair up")


@dataclass(frozen=True)
class Finding:
    """One inconsistency, as persisted in `recon_findings` and counted in the metrics."""

    table: str
    check: str
    type: str
    severity: Severity
    key: str | None = None
    columns: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict, compare=False)
    target_hash: str | None = None

    @classmethod
    def from_diff(cls, table: str, check: str, diff: RowDiff) -> Finding:
        detail: dict[str, Any] = {}
        if diff.columns:
            detail = {
                "source": dict(zip(diff.columns, diff.source_values, strict=True)),
                "target": dict(zip(diff.columns, diff.target_values, strict=True)),
            }
        return cls(
            table=table,
            check=check,
            type=diff.kind,
            severity=SEVERITY[diff.kind],
            key=diff.key,
            columns=diff.columns,
            detail=detail,
            target_hash=diff.target_hash,
        )


@dataclass(frozen=True)
class CheckResult:
    """One check of one table: PASS, FAIL (with findings) or ERROR (with the message)."""

    table: str
    check: str
    status: Literal["PASS", "FAIL", "ERROR"]
    findings: tuple[Finding, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict, compare=False)
    seconds: float = 0.0
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status == PASS and self.findings:
            raise ValueError("a passing check has no findings")
        if self.status == ERROR and not self.error:
            raise ValueError("an erroneous check carries its error")

    @classmethod
    def of(cls, table: str, check: str, findings: list[Finding], **kw: Any) -> CheckResult:
        return cls(table, check, FAIL if findings else PASS, tuple(findings), **kw)

    def as_dict(self, shown: int = 20) -> dict[str, Any]:
        return {
            "table": self.table,
            "check": self.check,
            "status": self.status,
            "findings": len(self.findings),
            "stats": self.stats,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "first": [
                {"type": f.type, "key": f.key, "columns": list(f.columns), **f.detail}
                for f in self.findings[:shown]
            ],
        }
