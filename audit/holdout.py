"""Holdout-relative privacy statistics: does a release sit closer to the private members than an
equally sized set of records that were never used (Platzer & Reutterer 2021; SDMetrics' DCR
overfitting protection)?

Pure functions over nearest-neighbour scores (higher = more similar) and uint8 images:

- holdout_share_test: the share of released images whose nearest score to a sample of members
  beats their nearest score to as many held-out non-members (ties count half), with a one-sided
  permutation p-value (member sample and holdout relabelled at random) and, for reference, the
  binomial p-value against 0.5 that assumes independent released images;
- copy_share: the share of released images whose nearest-member score exceeds a high quantile of
  what held-out non-members score to the same members, with the exact p-value of that count under
  "released images are exchangeable with held-out ones" (beta-binomial: the threshold is itself an
  order statistic of the held-out scores);
- exact_copies: released images whose every pixel lies within a tolerance of some member's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta, betabinom, binom

from audit.errors import AuditError
from audit.similarity import Metric, nearest_neighbours

COPY_QUANTILE = 0.99  # held-out non-members exceed the copy threshold this rarely (at most 1%)
EXACT_TOLERANCE = 2  # grey levels: an "exact copy" matches a member to within +-2 at every pixel


@dataclass(frozen=True)
class ShareTest:
    """A share of released images with its 95% CI, what it is expected to be when the release does
    not memorise, and the one-sided p-value of seeing at least this share then."""

    share: float
    ci_low: float
    ci_high: float
    expected: float
    p_value: float
    n: int
    p_binomial: float | None = None  # the holdout share's naive binomial p-value, for reference


def clopper_pearson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact binomial interval (successes may be a half-count from ties)."""
    tail = (1 - level) / 2
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes >= n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return low, high


PERMUTATIONS = 10_000  # random relabellings of member sample vs holdout: p-values down to 1e-4
TOP_K = 8  # nearest pool images kept per released image: enough to see ties at the top


def _nearest_side(labels: np.ndarray, top: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """(b, n): 1 where a released image is closer to the side labelled True, 0 where closer to
    the other, 0.5 for a tie, for each row of labels (relabellings of the pool). top: (n, k)
    pool positions, best first; tied: (n, k), which of them share the best score. Only the
    best-scoring images decide, so k images suffice: the side that holds none of the top k is
    further away."""
    side = labels[:, top]  # (b, n, k)
    any_member = (side & tied).any(axis=2)
    any_holdout = (~side & tied).any(axis=2)
    return np.where(any_member & any_holdout, 0.5, any_member.astype(np.float64))


def nearest_side(top_values: np.ndarray, top_positions: np.ndarray, n_sample: int) -> np.ndarray:
    """Per released image: 1 if its nearest pool image is in the member sample (positions below
    n_sample), 0 if in the holdout, 0.5 for a tie between the two."""
    top = np.asarray(top_positions, np.int64)
    tied = top_values == top_values[:, :1]
    labels = (np.arange(int(top.max()) + 1) < n_sample)[None, :]
    return _nearest_side(labels, top, tied)[0]


def holdout_share_test(
    top_values: np.ndarray,
    top_positions: np.ndarray,
    n_sample: int,
    n_pool: int,
    rng: np.random.Generator,
    permutations: int = PERMUTATIONS,
) -> ShareTest:
    """The holdout share from each released image's nearest images in the pool (member sample
    at positions < n_sample, then the holdout), tested by permutation.

    Under no memorisation the member sample and the holdout are exchangeable draws of one
    distribution, so every relabelling of the pool into two sides of the same sizes is as
    likely: the p-value is the share of random relabellings (plus the observed one) whose share
    is at least the observed. Unlike a binomial test it holds when released images are not
    independent: an unrealistic release tends to find the same few "hub" images nearest, so
    whichever side holds the hubs wins for many images at once (on the default digits run a
    binomial p of 0.0018 was 0.016 by permutation). The 95% interval is the observed share
    +- 1.96 permutation standard deviations."""
    values = np.asarray(top_values, np.float64)
    top = np.asarray(top_positions, np.int64)
    n, pool = len(values), n_pool
    if n == 0 or values.ndim != 2 or values.shape != top.shape or top.max() >= pool:
        raise ValueError("holdout_share_test needs (n, k) nearest values and pool positions")
    tied = values == values[:, :1]
    observed = float(nearest_side(values, top, n_sample).mean())
    base = np.arange(pool) < n_sample
    chunk = max(1, 20_000_000 // max(1, n * top.shape[1]))
    null = []
    for start in range(0, permutations, chunk):
        labels = rng.permuted(np.tile(base, (min(chunk, permutations - start), 1)), axis=1)
        null.append(_nearest_side(labels, top, tied).mean(axis=1))
    null_shares = np.concatenate(null)
    p_value = (1 + int((null_shares >= observed - 1e-12).sum())) / (1 + permutations)
    spread = 1.96 * float(null_shares.std())
    wins = observed * n
    return ShareTest(
        share=observed,
        ci_low=max(0.0, observed - spread),
        ci_high=min(1.0, observed + spread),
        expected=float(null_shares.mean()),
        p_value=p_value,
        n=n,
        p_binomial=float(binom.sf(math.floor(wins) - 1, n, 0.5)),
    )


def copy_threshold(calibration: np.ndarray, quantile: float = COPY_QUANTILE) -> tuple[float, int]:
    """(threshold, rank): the rank-th smallest held-out score, rank = ceil(quantile * (n + 1))
    (at most n), so a fresh exchangeable score exceeds it with probability (n - rank + 1)/(n + 1)
    <= 1 - quantile (the conformal choice); with fewer than 1/(1 - quantile) - 1 held-out records
    the threshold is their max and the expected rate 1/(n + 1)."""
    scores = np.sort(np.asarray(calibration, np.float64))
    if len(scores) == 0:
        raise ValueError("copy detection needs held-out scores to calibrate on")
    rank = min(math.ceil(quantile * (len(scores) + 1)), len(scores))
    return float(scores[rank - 1]), rank


def copy_share(
    released: np.ndarray, calibration: np.ndarray, quantile: float = COPY_QUANTILE
) -> tuple[ShareTest, float]:
    """(test, threshold): the share of released images whose nearest-member score exceeds the
    held-out threshold. Given the threshold, the count is binomial with the held-out exceedance
    rate q, and q ~ Beta(n - rank + 1, rank) over the draw of the held-out set; the count is then
    beta-binomial, which is the exact null distribution the p-value uses (a plain binomial at 1%
    would ignore that every released image shares one estimated threshold)."""
    tau, rank = copy_threshold(calibration, quantile)
    scores = np.asarray(released, np.float64)
    if len(scores) == 0:
        raise ValueError("copy detection needs released scores")
    n_cal, n = len(calibration), len(scores)
    exceed = int((scores > tau).sum())
    a, b = n_cal - rank + 1, rank
    low, high = clopper_pearson_interval(exceed, n)
    p_value = float(betabinom.sf(exceed - 1, n, a, b))
    return ShareTest(exceed / n, low, high, a / (n_cal + 1), p_value, n), tau


def _coarse(images: torch.Tensor) -> torch.Tensor:
    """4x4 block means per channel: if two images agree within t at every pixel, every block mean
    agrees within t too, so this is a cheap necessary condition for an exact copy."""
    x = images.permute(0, 3, 1, 2).double()
    return F.adaptive_avg_pool2d(x, 4).flatten(1)


def exact_copies(
    released: np.ndarray,
    members: np.ndarray,
    *,
    tolerance: int = EXACT_TOLERANCE,
    block: int = 512,
    pair_chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """(released positions, member positions) of released images that match a member within
    `tolerance` grey levels at every pixel, each with the lowest-index such member. Exact: block
    means prune the pairs, then the survivors are compared pixel by pixel."""
    if released.shape[1:] != members.shape[1:]:
        raise ValueError("released and member images differ in shape")
    rel, mem = torch.from_numpy(released), torch.from_numpy(members)
    rel_flat, mem_flat = rel.reshape(len(rel), -1).short(), mem.reshape(len(mem), -1).short()
    mem_coarse = _coarse(mem)
    found: dict[int, int] = {}
    for start in range(0, len(rel), block):
        rel_coarse = _coarse(rel[start : start + block])
        close = torch.cdist(rel_coarse, mem_coarse, p=float("inf")) <= tolerance + 1e-9
        pairs = close.nonzero()
        for chunk in pairs.split(pair_chunk):
            i, j = chunk[:, 0] + start, chunk[:, 1]
            linf = (rel_flat[i] - mem_flat[j]).abs().amax(dim=1)
            for a, b in chunk[linf <= tolerance].tolist():
                found.setdefault(a + start, b)  # pairs come in row-major order: lowest j first
    order = sorted(found)
    return np.array(order, dtype=np.int64), np.array([found[i] for i in order], dtype=np.int64)


@dataclass(frozen=True)
class HoldoutSets:
    """How the non-members serve the holdout statistics. holdout: the yardstick (dataset indices
    of non-members never offered as a release); member_sample: as many members (positions in
    split.members) for the holdout share; real_release: other non-members, offered as the `real`
    row's release so the reader sees what chance looks like."""

    holdout: np.ndarray
    member_sample: np.ndarray
    real_release: np.ndarray


def choose_holdout(
    nonmembers: np.ndarray,
    n_members: int,
    rng: np.random.Generator,
    *,
    max_holdout: int,
    max_real: int,
) -> HoldoutSets:
    """Half the non-members (at most max_holdout, and no more than there are members) become the
    holdout, the rest (at most max_real) the real row's release; a member sample as large as the
    holdout is drawn without replacement."""
    if len(nonmembers) < 2:
        raise AuditError(
            f"the holdout statistics need at least 2 non-members (a holdout and a real-row "
            f"release), the split has {len(nonmembers)}"
        )
    order = rng.permutation(nonmembers)
    n_holdout = min((len(order) + 1) // 2, max_holdout, n_members)
    holdout, rest = order[:n_holdout], order[n_holdout:]
    member_sample = rng.choice(n_members, n_holdout, replace=False)
    return HoldoutSets(
        holdout=np.sort(holdout),
        member_sample=np.sort(member_sample),
        real_release=np.sort(rest[:max_real]),
    )


def memorisation_statistics(
    query: np.ndarray,
    to_members: dict[Metric, np.ndarray],
    *,
    members: np.ndarray,
    member_sample: np.ndarray,
    holdout: np.ndarray,
    calibration: dict[Metric, np.ndarray],
    rng: np.random.Generator,
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every holdout-relative statistic of one released set (uint8 NHWC images).

    to_members: per metric, each query image's nearest score among all members; calibration: per
    metric, each held-out image's nearest score among the same members; member_sample and
    holdout: equally many member and held-out images; rng: the holdout share's permutations.
    Returns the summary columns and the per-image arrays (which side each image is nearest,
    exact copies' positions)."""
    summary: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    pool = np.concatenate([member_sample, holdout])
    for metric, values in to_members.items():
        top_values, top_positions = nearest_neighbours(
            query, pool, metric, k=min(TOP_K, len(pool)), device=device, progress=False
        )
        share = holdout_share_test(top_values, top_positions, len(member_sample), len(pool), rng)
        # 1: nearest the member sample, 0: nearest the holdout, 0.5: a tie
        arrays[f"{metric}_nearest_side"] = nearest_side(
            top_values, top_positions, len(member_sample)
        )
        copies, threshold = copy_share(values, calibration[metric])
        summary.update(
            {
                f"holdout_share_{metric}": share.share,
                f"holdout_share_{metric}_ci_low": share.ci_low,
                f"holdout_share_{metric}_ci_high": share.ci_high,
                f"holdout_share_{metric}_p": share.p_value,
                f"holdout_share_{metric}_p_binomial": share.p_binomial,
                f"copy_share_{metric}": copies.share,
                f"copy_share_{metric}_ci_low": copies.ci_low,
                f"copy_share_{metric}_ci_high": copies.ci_high,
                f"copy_share_{metric}_p": copies.p_value,
                f"copy_share_{metric}_expected": copies.expected,
                f"copy_threshold_{metric}": threshold,
            }
        )
    released_pos, member_pos = exact_copies(query, members)
    summary["exact_copies"] = len(released_pos)
    arrays["exact_copy_released"] = released_pos  # position within the released set
    arrays["exact_copy_member"] = member_pos  # position within the members
    return summary, arrays
