"""What must hold after every fault of a chaos run (tests/e2e/chaos.py), read from the databases.

- **converged**: the target equals the source row for row and the ledger holds every
  change of the change log (`Pipeline.converged`, P1);
- **none lost, none twice**: the ledger's change ids are exactly the trigger change log's
  (`Pipeline.exactly_once`): a change id of the log missing from the ledger is lost, one
  in the ledger twice (its unique index forbids it) or not in the log is doubled (P1, P2);
- **no regression**: no key's stored position (`key_state.position`) is ever older than
  the newest one seen for it before, across the whole run (P3); positions are compared
  as the ordered tuples they are (bigint[]), never as text;
- **corrections keep their images**: every applied correction of `reconcile --apply` has
  its before image (an update or delete) and its after image (an insert or update) (P6).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from tests.e2e.pipeline import Pipeline

Key = tuple[str, str]  # (target table, key text)

BROKEN_CORRECTIONS = """
SELECT count(*) FROM {s}.recon_corrections WHERE status = 'applied' AND (
    (correction IN ('update', 'delete') AND before IS NULL)
    OR (correction IN ('update', 'insert') AND after IS NULL))
"""


def positions(pipeline: Pipeline) -> dict[Key, tuple[int, ...]]:
    """Every key's stored position, from the target's key_state."""
    sql = f'SELECT target_table, key_text, position FROM "{pipeline.target.schema}".key_state'
    with pipeline.target.engine.connect() as conn:
        return {(t, k): tuple(p) for t, k, p in conn.execute(sa.text(sql))}


def broken_corrections(pipeline: Pipeline) -> int:
    """Applied corrections that lack the before or after image their kind must keep."""
    return int(pipeline.scalar(pipeline.target, BROKEN_CORRECTIONS))


def corrections(pipeline: Pipeline) -> Counter[str]:
    """Corrections recorded so far, by kind/status."""
    sql = (
        "SELECT correction || '/' || status, count(*) "
        f'FROM "{pipeline.target.schema}".recon_corrections GROUP BY 1'
    )
    with pipeline.target.engine.connect() as conn:
        return Counter({kind: int(n) for kind, n in conn.execute(sa.text(sql))})


@dataclass
class Invariants:
    """The run's running account: the newest position seen per key, what broke."""

    highest: dict[Key, tuple[int, ...]] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    doubled: set[str] = field(default_factory=set)
    regressed: set[Key] = field(default_factory=set)
    broken_images: int = 0

    def observe_positions(self, pipeline: Pipeline) -> list[Key]:
        """Reads key_state; returns the keys whose position is older than one seen before
        (and remembers the newest position of every key)."""
        back = []
        for key, position in positions(pipeline).items():
            seen = self.highest.get(key)
            if seen is not None and position < seen:
                back.append(key)
            else:
                self.highest[key] = position
        self.regressed.update(back)
        return back

    def check(self, pipeline: Pipeline) -> list[str]:
        """Every invariant after a converged fault; what broke, in words (empty: none)."""
        problems = []
        ledger, changelog = pipeline.ledger_ids(), pipeline.changelog_ids()
        twice = [cid for cid, n in Counter(ledger).items() if n > 1]
        lost = set(changelog) - set(ledger)
        unexpected = set(ledger) - set(changelog)
        self.lost |= lost
        self.doubled |= set(twice) | unexpected
        if lost or twice or unexpected:
            problems.append(
                f"ledger vs change log: lost {sorted(lost)[:5]} ({len(lost)}), twice "
                f"{twice[:5]} ({len(twice)}), not in the log {sorted(unexpected)[:5]}"
            )
        back = self.observe_positions(pipeline)
        if back:
            problems.append(f"positions went backwards for {len(back)} keys: {back[:5]}")
        broken = broken_corrections(pipeline)
        if broken > self.broken_images:
            problems.append(f"{broken - self.broken_images} applied corrections lack an image")
        self.broken_images = broken
        return problems
