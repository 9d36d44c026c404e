"""What every source change-log adapter gives the sweeper: windows, stages and counts.

An adapter knows one kind of evidence of what the source changed (a trigger-fed change
log, Debezium's transaction metadata, the CDC topics themselves). For a closed `Window`
it loads that evidence into the target's stage (`stage()`), and says how far windows are
closed (`closed_until()`) and where its evidence begins (`earliest()`). The sweeper does
the rest: the anti-join, the records, the replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time interval [start, end) of source changes, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window ends before it starts: {self.start} .. {self.end}")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def steps(self, max_seconds: float) -> list[Window]:
        """The window cut into consecutive steps of at most `max_seconds`."""
        if max_seconds <= 0:
            raise ValueError("a step needs a positive length")
        count = max(1, math.ceil(self.seconds / max_seconds))
        size = dt.timedelta(seconds=max_seconds)
        bounds = [min(self.start + size * i, self.end) for i in range(count)] + [self.end]
        return [Window(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]

    def __str__(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class Classified:
    """What one sweep step found, per class. `earliest_in_flight` holds the watermark
    back: the next run checks again from there."""

    applied: int = 0
    superseded: int = 0
    missed: int = 0
    in_flight: int = 0
    earliest_in_flight: dt.datetime | None = None
    missed_ids: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.applied + self.superseded + self.missed + self.in_flight

    def __add__(self, other: Classified) -> Classified:
        earliest = [t for t in (self.earliest_in_flight, other.earliest_in_flight) if t]
        return Classified(
            applied=self.applied + other.applied,
            superseded=self.superseded + other.superseded,
            missed=self.missed + other.missed,
            in_flight=self.in_flight + other.in_flight,
            earliest_in_flight=min(earliest) if earliest else None,
            missed_ids=self.missed_ids + other.missed_ids,
        )

    def replace(self, **changes: Any) -> Classified:
        return dataclasses.replace(self, **changes)


class ChangeSource(Protocol):
    """One adapter; `unit` names what its counts count (changes, transactions...)."""

    name: str
    unit: str
    transactions: bool  # stages transactions (`_cdcr_sweep_tx`) instead of changes

    def earliest(self) -> dt.datetime | None:
        """Where the evidence begins (a first run starts there); None when empty."""
        ...

    def closed_until(self, grace: float) -> dt.datetime:
        """The end of the newest closed window: now - grace, in the evidence's clock."""
        ...

    def stage(self, cursor: Any, window: Window) -> int:
        """Load the window's evidence into the target's stage; returns the rows loaded."""
        ...

    def classify(self, cursor: Any, params: dict[str, Any], *, window: Window) -> bool:
        """Classify the staged window into the open entries itself (True), or leave it to
        the sweeper's anti-join by change id (False). `params` are the sweeper's."""
        ...

    def prune(self, before: dt.datetime) -> int:
        """Drop evidence older than `before` (retention); returns the rows dropped."""
        ...

    def close(self) -> None: ...
