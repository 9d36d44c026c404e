"""Replay: re-apply a time window on demand, or the changes the sweeper found missing.

Everything goes through the service's own `Applier` (one target transaction per batch,
with `next_offsets={}` so the service's stored offsets are never touched), so a replay
is idempotent: a change already in the ledger is a duplicate, and one not newer than
what its key holds is superseded (promises P2, P3). A second run changes nothing.

Where the changes come from:

- **Kafka** (`kafka.window.WindowReader`): the CDC topics' messages timestamped in the
  window, or the messages at known coordinates, decoded as the service decodes them.
- **The source database** (`source_db.rows`, PostgreSQL only): the current rows of the
  keys, re-read under `FOR SHARE` locks as snapshot-like events whose position is the
  WAL LSN read after the locks, and whose `tx` is the re-reading transaction's own xid
  (`txid_current() & 0xffffffff`). The applier therefore treats a re-read as newer than
  anything applied before it and older than anything the source commits after it; the
  ledger records it under its own change id, and the sweeper then sees the missed change
  superseded, since its key holds a newer position. A key without a row becomes a delete.
  These positions are WAL LSNs, comparable with Debezium's PostgreSQL positions and the
  trigger change log's; pipelines with other positions (the plain format's timestamps)
  should replay from Kafka.

    >>> from cdc_recon.replay import replay_window, replay_missed
    >>> summary = replay_window(settings, start=start, end=end)   # doctest: +SKIP
    >>> summary.applied, summary.duplicates                       # doctest: +SKIP
    >>> outcomes = replay_missed(settings, missed)                # doctest: +SKIP
"""

from __future__ import annotations

from cdc_recon.replay.changes import MissedChange, ReplayOutcome, ReplaySummary
from cdc_recon.replay.missed import replay_missed
from cdc_recon.replay.window import replay_window

__all__ = ["MissedChange", "ReplayOutcome", "ReplaySummary", "replay_missed", "replay_window"]
