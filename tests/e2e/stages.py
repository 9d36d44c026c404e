"""Which stage of the pipeline stalled: what an end-to-end wait prints when it times out.

A change passes four stages on its way from the source to the target:

    source (trigger change log)  --Debezium-->  topics (end offsets)
        --cdc-recon-->  target (stored offsets, ledger)  --cdc-recon-->  Kafka (committed)

`StageReport.collect(pipeline)` reads each stage's count once: the source's changes
(and deletes, each of which Debezium follows with a tombstone), the topics' end offsets,
the offsets stored in the target, the group's committed offsets, the ledger count, the
connector's task states, and the tails of the cdc-recon and Connect logs. `verdict()`
names the first stage that is behind. Every reading survives its system being down (a
stopped broker is exactly when a report is wanted): it then says what failed instead.

`tests.e2e.processes.wait_until(..., explain=...)` prints the report on a timeout;
`Pipeline.wait` passes `Pipeline.stage_report` for every wait of the end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tests.e2e.pipeline import Pipeline

T = TypeVar("T")
TAIL = 25  # lines of each log in a report
SERVICES = 4  # the cdc-recon processes a report shows the logs of: the last started
Offsets = Mapping[tuple[str, int], int]


def _read(what: Callable[[], T]) -> T | str:
    """`what()`, or the error's one-line description: the report must not fail."""
    try:
        return what()
    except Exception as exc:  # a stopped broker or database is a finding, not a crash
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def tail(path: Path, lines: int = TAIL) -> str:
    """The last `lines` lines of a log file, indented; says so when there is none."""
    if not path.exists():
        return f"    ({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line[:400]}" for line in text) or "    (empty)"


def _total(offsets: Offsets | str) -> int | str:
    return sum(offsets.values()) if not isinstance(offsets, str) else offsets


def _format(offsets: Offsets | str) -> str:
    if isinstance(offsets, str):
        return offsets
    return ", ".join(f"{t.rsplit('.', 1)[-1]}[{p}]={o}" for (t, p), o in sorted(offsets.items()))


@dataclass
class StageReport:
    """One reading of every stage; see the module docstring."""

    changes: int | str
    deletes: int | str
    published: Offsets | str
    stored: Offsets | str
    committed: Offsets | str
    ledger: int | str
    connector: str
    logs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def collect(cls, pipeline: Pipeline) -> StageReport:
        services = list(enumerate(pipeline.services))[-SERVICES:]
        logs = {f"cdc-recon {i} ({s.err.name})": s.err for i, s in services}
        logs.update(pipeline.extra_logs)
        logs["Kafka Connect"] = pipeline.stack.log("connect")
        return cls(
            changes=_read(pipeline.changelog_count),
            deletes=_read(pipeline.changelog_deletes),
            published=_read(pipeline.high_watermarks),
            stored=_read(pipeline.stored_offsets),
            committed=_read(pipeline.committed_offsets),
            ledger=_read(pipeline.ledger_count),
            connector=str(_read(lambda: pipeline.connector_status())),
            logs=logs,
        )

    def expected_messages(self) -> int | None:
        """What Debezium must publish for the source's changes: one message per change
        and a tombstone after each delete."""
        if isinstance(self.changes, int) and isinstance(self.deletes, int):
            return self.changes + self.deletes
        return None

    def verdict(self) -> str:
        """The first stage that is behind, in the words an operator would use."""
        expected, published = self.expected_messages(), _total(self.published)
        if expected is None or isinstance(published, str):
            return "cannot tell: a stage could not be read (see below)"
        if published < expected:
            return (
                f"Debezium -> Kafka: the topics hold {published} of the {expected} messages "
                "the source's changes make (changes + delete tombstones)"
            )
        behind = _behind(self.published, self.stored)
        if behind:
            return f"Kafka -> cdc-recon: the target's stored offsets are behind on {behind}"
        if isinstance(self.ledger, int) and isinstance(self.changes, int):
            if self.ledger < self.changes:
                return (
                    f"cdc-recon: read to the end but the ledger holds {self.ledger} of "
                    f"{self.changes} changes (quarantined or superseded? see failures)"
                )
        lagging = _behind(self.stored, self.committed)
        note = f" (Kafka's committed offsets lag on {lagging}: a copy only)" if lagging else ""
        return "no stage is behind: every change is read and in the ledger" + note

    def text(self) -> str:
        lines = [
            f"stalled stage: {self.verdict()}",
            f"  source changes (trigger log): {self.changes} (deletes {self.deletes}, "
            f"so {self.expected_messages()} messages expected)",
            f"  published (topic end offsets): {_total(self.published)}: {_format(self.published)}",
            f"  stored in the target: {_total(self.stored)}: {_format(self.stored)}",
            f"  committed to Kafka by the group: {_total(self.committed)}: "
            f"{_format(self.committed)}",
            f"  ledger: {self.ledger}",
            "  connector:",
            *(f"    {line}" for line in self.connector.strip().splitlines()),
        ]
        for name, path in self.logs.items():
            lines += [f"  last lines of {name}:", tail(path)]
        return "\n".join(lines)


def _behind(ahead: Offsets | str, behind: Offsets | str) -> str:
    if isinstance(ahead, str) or isinstance(behind, str):
        return ""
    late = [
        f"{t.rsplit('.', 1)[-1]}[{p}] {behind.get((t, p), 0)}/{end}"
        for (t, p), end in sorted(ahead.items())
        if end and behind.get((t, p), 0) < end
    ]
    return ", ".join(late)
