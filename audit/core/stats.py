"""Exact binomial confidence bounds (Clopper & Pearson 1934): the one implementation the holdout
tests, the attack metrics and the benches share."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta


def clopper_pearson(
    successes: np.ndarray | float, trials: int, *, alpha: float, upper: bool
) -> np.ndarray:
    """One-sided exact binomial bound on a success probability, elementwise.

    Args:
        successes: counts in [0, trials], any shape.
        trials: the number of trials, > 0.
        alpha: the bound's error probability, in (0, 1): it holds with confidence 1 - alpha.
        upper: True for the upper bound, False for the lower one.

    Returns:
        float64 bounds in [0, 1], the shape of `successes` (1.0 where the upper bound meets
        successes == trials, 0.0 where the lower one meets successes == 0).

    Raises:
        ValueError: trials <= 0, alpha outside (0, 1), or a count outside [0, trials].
    """
    k = np.asarray(successes, dtype=np.float64)
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if np.any((k < 0) | (k > trials)):
        raise ValueError(f"successes must lie in [0, {trials}]")
    if upper:
        bound = beta.ppf(1 - alpha, k + 1, trials - k)
        return np.where(k >= trials, 1.0, bound)
    bound = beta.ppf(alpha, k, trials - k + 1)
    return np.where(k <= 0, 0.0, bound)


def clopper_pearson_interval(
    successes: float, trials: int, *, level: float = 0.95
) -> tuple[float, float]:
    """Two-sided exact binomial interval: the two one-sided bounds at (1 - level) / 2 each.

    Args:
        successes: a count in [0, trials].
        trials: the number of trials, > 0.
        level: the interval's confidence, in (0, 1).

    Returns:
        (low, high), both in [0, 1].

    Raises:
        ValueError: as `clopper_pearson`, or level outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = (1 - level) / 2
    low = clopper_pearson(successes, trials, alpha=tail, upper=False)
    high = clopper_pearson(successes, trials, alpha=tail, upper=True)
    return float(low), float(high)
