"""Replaying what the sweeper found missing, and recording each outcome.

The replay itself is `cdc_recon.replay.replay_missed` (from Kafka while the message is
retained, else the key's current row from the source, applied through the Applier);
this module feeds it the pending rows of `missed_changes` in chunks and stores what it
answers: `replayed`, `failed` (what to fix is in `last_error`) or still `pending`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from cdc_recon.config import Settings
from cdc_recon.exceptions import CdcReconError
from cdc_recon.replay import MissedChange, replay_missed
from cdc_recon.sweep.store import SweepStore

LOG = logging.getLogger("cdc_recon.sweeper")
REPLAY_CHUNK = 1000


def replay_pending(
    settings: Settings,
    store: SweepStore,
    rows: Sequence[tuple[Any, ...]],
    cancel: Callable[[], bool],
) -> dict[str, int]:
    """Replay `rows` (pending missed changes) in chunks; returns the count per status.

    An error of the replay helper (Kafka or the source unreachable) leaves the chunk
    pending with the error as `last_error`, and stops: the next run tries again.
    """
    counts: dict[str, int] = {}
    for first in range(0, len(rows), REPLAY_CHUNK):
        if cancel():
            break
        chunk = [_missed(row) for row in rows[first : first + REPLAY_CHUNK]]
        try:
            outcomes = {
                change_id: (outcome.status, outcome.detail)
                for change_id, outcome in replay_missed(settings, chunk).items()
            }
        except CdcReconError as exc:
            LOG.warning("replay of %d missed changes failed: %s", len(chunk), exc)
            store.store_outcomes({m.change_id: ("pending", str(exc)) for m in chunk})
            counts["pending"] = counts.get("pending", 0) + len(chunk)
            break
        store.store_outcomes(outcomes)
        for status, _ in outcomes.values():
            counts[status] = counts.get(status, 0) + 1
    return counts


def _missed(row: tuple[Any, ...]) -> MissedChange:
    """A `missed_changes` row (MISSED_COLUMNS order) for the replay helper."""
    change_id, table, key, tx, position, changed_at, topic, partition, offset = row
    return MissedChange(
        change_id=change_id,
        source_table=table,
        key_text=key,
        tx=tx or "",
        position=tuple(position) if position else None,
        changed_at=changed_at,
        topic=topic,
        partition=partition,
        offset=offset,
    )
