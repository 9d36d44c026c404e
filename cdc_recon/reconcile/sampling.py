"""Statistical sampling: how many keys to check, and what the errors found say.

    >>> sample_size(1_000_000, confidence=0.95, margin=0.01)
    9513
    >>> sample_size(1_000, confidence=0.95, margin=0.05)
    278

Sample size is Cochran's n0 = z² p (1 - p) / e² with the finite-population correction
n = n0 / (1 + (n0 - 1) / N). The error rate's interval is Wilson's score interval, its
z narrowed by the same correction, sqrt((N - n) / (N - 1)): sampling most of a small
table leaves little doubt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def z_score(confidence: float) -> float:
    """Two-sided critical value: 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def sample_size(
    population: int, *, confidence: float, margin: float, proportion: float = 0.5
) -> int:
    """Rows to sample for `margin` at `confidence`, never more than the population."""
    if population <= 0:
        return 0
    if not 0 < margin < 1 or not 0 < proportion < 1:
        raise ValueError("margin and proportion must be between 0 and 1")
    z = z_score(confidence)
    n0 = z * z * proportion * (1 - proportion) / (margin * margin)
    return min(population, math.ceil(n0 / (1 + (n0 - 1) / population)))


def fpc(population: int, sampled: int) -> float:
    """The finite-population correction factor of the standard error."""
    if population <= 1 or sampled >= population:
        return 0.0
    return math.sqrt((population - sampled) / (population - 1))


def error_interval(
    errors: int, sampled: int, population: int, confidence: float
) -> tuple[float, float]:
    """Wilson's interval for the error rate, corrected for the finite population."""
    if sampled <= 0:
        return (0.0, 1.0)
    if not 0 <= errors <= sampled:
        raise ValueError("errors must be between 0 and the sample size")
    p = errors / sampled
    z = z_score(confidence) * fpc(population, sampled)
    if z == 0.0:
        return (p, p)
    denominator = 1 + z * z / sampled
    centre = (p + z * z / (2 * sampled)) / denominator
    spread = z * math.sqrt(p * (1 - p) / sampled + z * z / (4 * sampled * sampled))
    spread /= denominator
    return (max(0.0, centre - spread), min(1.0, centre + spread))


@dataclass(frozen=True)
class SampleVerdict:
    population: int
    sampled: int
    errors: int
    error_rate: float
    interval: tuple[float, float]
    recommendation: str


def verdict(
    errors: int, sampled: int, population: int, *, confidence: float, margin: float
) -> SampleVerdict:
    """The error rate, its interval and what to do next."""
    low, high = error_interval(errors, sampled, population, confidence)
    rate = errors / sampled if sampled else 0.0
    if sampled == 0:
        advice = "nothing to sample: the source table is empty"
    elif errors == 0 and high <= margin:
        advice = (
            f"consistent: error rate below {high:.4%} at {confidence:.0%} confidence; "
            "keep sampling on schedule"
        )
    elif errors == 0:
        advice = "no errors found, but the interval is wide: sample more or run checksums"
    elif high < 0.01:
        advice = "rare differences: run `--check checksums` to find and fix every key"
    else:
        advice = (
            "widespread differences: run `--check checksums --fix`, and look for a "
            "systematic cause (a column mapping, a stopped consumer)"
        )
    return SampleVerdict(population, sampled, errors, rate, (low, high), advice)
