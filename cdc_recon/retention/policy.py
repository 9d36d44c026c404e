"""Retention decisions (pure, no I/O): what is old enough, and how long Kafka can redeliver.

    >>> cutoff(dt.datetime(2026, 1, 31, tzinfo=dt.UTC), 86400.0)
    datetime.datetime(2026, 1, 30, 0, 0, tzinfo=datetime.timezone.utc)
    >>> topic_horizon({"retention.ms": "-1", "segment.ms": "604800000"}) is None
    True

The delete-marker horizon is how long a message can still be read from a topic after
it was written: a segment is deleted only when its *newest* message is older than
`retention.ms`, and a segment spans up to `segment.ms`, so a message may outlive
`retention.ms` by up to `segment.ms`, and by the broker's check interval (covered by
`SLACK`, which also absorbs clock skew between the broker and the target). A topic that
is only compacted (`cleanup.policy` without `delete`) or has `retention.ms` -1 keeps
messages forever: no horizon, never prune.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SLACK = 3600.0  # seconds added to a topic's horizon: retention check interval, clock skew
RETENTION_MS = "retention.ms"
SEGMENT_MS = "segment.ms"
CLEANUP_POLICY = "cleanup.policy"
TOPIC_CONFIGS = (RETENTION_MS, SEGMENT_MS, CLEANUP_POLICY)

# Outcomes of one task in one round.
OK = "ok"  # everything old enough is gone (or would be, in a dry run)
BUSY = "busy"  # a lock was held by another transaction: gave up, the next round retries
OFF = "off"  # this table keeps its rows (setting null, infinite topic retention, unknown)
FAILED = "failed"  # an error; logged, the next round retries


def cutoff(now: dt.datetime, keep: float | None) -> dt.datetime | None:
    """Rows older than the returned time may go; None: keep everything."""
    if keep is None:
        return None
    return now - dt.timedelta(seconds=keep)


def topic_horizon(config: Mapping[str, str]) -> float | None:
    """Seconds after which a topic can no longer deliver a message; None: never."""
    policy = {p.strip() for p in config.get(CLEANUP_POLICY, "delete").split(",")}
    retention_ms = int(config.get(RETENTION_MS, "604800000"))
    if "delete" not in policy or retention_ms < 0:
        return None
    segment_ms = max(int(config.get(SEGMENT_MS, "604800000")), 0)
    return (retention_ms + segment_ms) / 1000.0 + SLACK


@dataclass(frozen=True)
class Horizon:
    """How long delete markers are kept, and why (for logs and `prune --json`)."""

    seconds: float | None  # None: never prune
    reason: str


def delete_retention(
    setting: float | str, topics: Mapping[str, Mapping[str, str] | None] | None
) -> Horizon:
    """The `key_state.delete_retention` in force: the setting's seconds, `never`, or
    (`topics`) the longest horizon of the topics read.

    `topics` maps each topic to its configs (None: the topic does not exist), or is None
    when Kafka could not be asked; an unknown horizon keeps every marker.
    """
    if isinstance(setting, int | float):
        return Horizon(float(setting), "key_state.delete_retention")
    if setting == "never":
        return Horizon(None, "key_state.delete_retention is never")
    if topics is None:
        return Horizon(None, "the topics' retention is unknown (Kafka did not answer)")
    known = {topic: config for topic, config in topics.items() if config is not None}
    if not known:
        return Horizon(None, "no topic read exists (or none is configured): retention unknown")
    horizons = {topic: topic_horizon(config) for topic, config in known.items()}
    forever = sorted(topic for topic, seconds in horizons.items() if seconds is None)
    if forever:
        return Horizon(None, f"topic {forever[0]} keeps messages forever")
    topic, seconds = max(_finite(horizons.items()), key=lambda item: item[1])
    return Horizon(seconds, f"topic {topic}: retention.ms + segment.ms + {SLACK:g}s")


def _finite(items: Iterable[tuple[str, float | None]]) -> list[tuple[str, float]]:
    return [(topic, seconds) for topic, seconds in items if seconds is not None]
