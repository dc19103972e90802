"""Holdout-relative privacy statistics: does a release sit closer to the private members than to
records that were never used (Platzer & Reutterer 2021), and does it hold images that stand out
as copies of members? Pure functions over nearest-neighbour scores (higher = more similar),
computed under a generator's augmentations (audit/core/transforms.py, audit/core/neighbours.py) so
that a mirrored or shifted copy counts as a copy.

- holdout_share_test: the share of released images whose nearest image in the pool of *every*
  member and the held-out non-members is a member. Under no memorisation the labels of the pool
  are exchangeable, so the share is tested by relabelling the pool at random (the sides may
  differ in size; chance is |M| / (|M| + |H|)); this holds whatever the release looks like
  (realistic, blurry, collapsed). Ties between pool images are broken by a seeded random order
  of the pool, never by which side an image is on.
- copy_count_test: few-copy detection. Each released image's stand-out ratio is the distance
  (1 - similarity) to its nearest member over the distance to its nearest held-out record: near
  0 for a copy of a member, near 1 for a fresh image, a blurry one or a repeated one. The
  private records themselves give the yardstick, each scored against the others: each held-out
  record (against the members and the other held-out records) and each sampled member (against
  the other members and the held-out records). Their ratios are exchangeable with a fresh draw's
  up to one record fewer on one side (|M| - 1 members for a member's, which makes its nearest
  member a little further: slightly anti-conservative, O(1 / |M|); |H| - 1 held-out records for
  a held-out record's: slightly conservative). A released image stands out when its ratio is
  below every one of these n_cal calibration ratios; the test counts the distinct members that
  standing-out images are nearest (a member copied ten times counts once, so a collapsed release
  of a few repeated images cannot inflate it). Its p-value is the beta-binomial tail of the
  number of images below the calibration minimum (the threshold being an order statistic), which
  bounds the distinct count's; it is exact for released images drawn like the data and
  calibration ratios exactly exchangeable with theirs, approximate here, and for a release drawn
  otherwise an assumption that bench/gate_power.py puts to the test.
- exact_copies: released images within a tolerance of a member at every pixel, also under a
  transformation (on the pixels both images hold).

Why not label permutations for the few-copy test as well: under relabelling, k copied pool
images are all labelled members with probability C(|M|, k) / C(|M| + |H|, k) whatever the
release, so k copies can give at best that p: 0.13 for 5 copies with 629 members and 315
held-out records (the default digits split). Only the rarity of such near-duplicates among the
private records can flag a handful of copies; the stand-out ratio is self-normalised (nearest
member against nearest held-out record, as Carlini et al. 2023 normalise by the next
neighbours) so that unrealistic releases need not stand out, and bench/gate_power.py measures
how often honest releases fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import betabinom

from audit.core.errors import AuditError
from audit.core.stats import clopper_pearson_interval

PERMUTATIONS = 10_000  # random relabellings of the pool: p-values down to 1e-4
COPY_RANK = 1  # a released image stands out below the calibration's smallest ratio
TIE_TOLERANCE = 1e-5  # scores this close are a tie (the engines agree with piq to 1e-5)


@dataclass(frozen=True)
class ShareTest:
    """The holdout share, its 95% Clopper-Pearson interval over the generator's draws (released
    images taken as independent samples), its value when nothing is memorised, and the one-sided
    permutation p-value of seeing at least this share then."""

    share: float
    ci_low: float
    ci_high: float
    expected: float
    p_value: float
    n: int


@dataclass(frozen=True)
class CopyTest:
    """Released images standing out as copies: how many, how many distinct members they are
    nearest, how many images were expected to stand out by chance, and the p-value."""

    count: int  # distinct members nearest a standing-out released image
    images: int  # released images standing out
    expected: float  # images expected to stand out when nothing is memorised
    p_value: float
    threshold: float  # the calibration ratio a released image must fall below
    n: int
    n_calibration: int


def pool_order(n_members: int, n_holdout: int, rng: np.random.Generator) -> np.ndarray:
    """A random rank for each pool image (members first, then held-out records): who wins a tie.
    Breaking ties by position would favour whichever side comes first.

    Args:
        n_members: |M|, the members in the pool (a count >= 0).
        n_holdout: |H|, the held-out records in the pool (a count >= 0).
        rng: draws the order (a seeded numpy Generator).

    Returns:
        (n_members + n_holdout,) int64, a permutation of 0..|M|+|H|-1 indexed by pool position
        (members first): the lower rank wins a tie.
    """
    return rng.permutation(n_members + n_holdout)


def nearest_in_pool(
    member_values: np.ndarray,
    member_positions: np.ndarray,
    holdout_values: np.ndarray,
    holdout_positions: np.ndarray,
    rank: np.ndarray,
    n_members: int,
) -> np.ndarray:
    """Per query, the pool position (members 0..|M|-1, then the holdout) of its nearest pool
    image, from its nearest member and nearest held-out record; scores within TIE_TOLERANCE
    (equal images scored by two searches differ in the last float digits) go to the image
    ranked first.

    Args:
        member_values: (n_query,) float, each query's score against its nearest member (higher =
            more similar).
        member_positions: (n_query,) int, that member's position in 0..|M|-1.
        holdout_values: (n_query,) float, each query's score against its nearest held-out record.
        holdout_positions: (n_query,) int, that record's position in the holdout, 0..|H|-1.
        rank: (|M| + |H|,) int, the pool's tie order from pool_order (lower wins a tie).
        n_members: |M|, a count >= 1: the held-out records' pool positions start there.

    Returns:
        (n_query,) int64 pool positions: below n_members the nearest member's, otherwise
        n_members plus the nearest held-out record's position.
    """
    member_rank = rank[member_positions]
    holdout_rank = rank[n_members + holdout_positions]
    gap = np.asarray(member_values, np.float64) - np.asarray(holdout_values, np.float64)
    member_nearer = (gap > TIE_TOLERANCE) | (
        (np.abs(gap) <= TIE_TOLERANCE) & (member_rank < holdout_rank)
    )
    return np.where(member_nearer, member_positions, n_members + holdout_positions)


def holdout_share_test(
    nearest: np.ndarray,
    n_members: int,
    n_pool: int,
    rng: np.random.Generator,
    permutations: int = PERMUTATIONS,
) -> ShareTest:
    """The share of queries whose nearest pool image (positions below n_members are members) is
    a member, tested by relabelling the pool: every choice of n_members pool images as "members"
    is equally likely when nothing is memorised. Unlike a binomial test it holds when released
    images are not independent: an unrealistic release tends to find the same few "hub" images
    nearest, so whichever side holds the hubs wins for many images at once.

    Args:
        nearest: (n,) int, each query's nearest pool position (nearest_in_pool), in [0, n_pool).
        n_members: |M|, the pool positions below it are members; 0 < n_members < n_pool.
        n_pool: |M| + |H|, the pool's size.
        rng: draws the relabellings (a seeded numpy Generator).
        permutations: random relabellings, a count >= 1: the smallest p-value is
            1 / (permutations + 1).

    Returns:
        The share in [0, 1], its 95% Clopper-Pearson interval, its chance level
        n_members / n_pool, the one-sided permutation p-value in (0, 1] and n.

    Raises:
        ValueError: no query, a position outside [0, n_pool), or not 0 < n_members < n_pool.
    """
    nearest = np.asarray(nearest, np.int64)
    n = len(nearest)
    if n == 0 or nearest.min() < 0 or nearest.max() >= n_pool or not 0 < n_members < n_pool:
        raise ValueError("holdout_share_test needs pool positions of the queries' nearest images")
    wins = int((nearest < n_members).sum())
    observed = wins / n
    _, counts = np.unique(nearest, return_counts=True)  # how many queries each hub is nearest
    null = _relabelled(counts, n_members, n_pool, rng, permutations) / n
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    low, high = clopper_pearson_interval(wins, n)
    return ShareTest(observed, low, high, n_members / n_pool, p_value, n)


def _relabelled(
    counts: np.ndarray, n_members: int, n_pool: int, rng: np.random.Generator, permutations: int
) -> np.ndarray:
    """Per relabelling, sum(counts[j] for the hub images j labelled member): the labels of the
    hubs are drawn one after another without replacement from n_members member labels among
    n_pool, which is the same as labelling the whole pool at random."""
    total = np.zeros(permutations)
    members_left = np.full(permutations, float(n_members))
    for drawn, count in enumerate(counts):
        is_member = rng.random(permutations) < members_left / (n_pool - drawn)
        members_left -= is_member
        total += count * is_member
    return total


def stand_out_ratio(member_values: np.ndarray, holdout_values: np.ndarray) -> np.ndarray:
    """(1 - nearest member's similarity) / (1 - nearest held-out record's): 0 for an exact copy
    of a member, about 1 for an image no nearer the members than to the held-out records; inf where
    the image equals a held-out record but no member, 1 where it equals both.

    Args:
        member_values: (n,) float, each image's score against its nearest member (higher = more
            similar, 1 for an identical image; scores above 1 count as 1).
        holdout_values: (n,) float, the same against its nearest held-out record.

    Returns:
        (n,) float64 ratios in [0, inf].
    """
    to_member = np.clip(1.0 - np.asarray(member_values, np.float64), 0.0, None)
    to_holdout = np.clip(1.0 - np.asarray(holdout_values, np.float64), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = to_member / to_holdout
    return np.where(to_holdout == 0, np.where(to_member == 0, 1.0, np.inf), ratio)


def copy_count_test(
    ratios: np.ndarray,
    nearest_member: np.ndarray,
    calibration: np.ndarray,
    *,
    rank: int = COPY_RANK,
) -> CopyTest:
    """Released images whose stand-out ratio is below the rank-th smallest calibration ratio.
    Under "released images are no nearer the members, relative to held-out records, than the
    private records are to each other", a fresh ratio falls below it with probability
    q ~ Beta(rank, n_cal - rank + 1), so the count of n released images below it is
    beta-binomial; the distinct members those images are nearest are at most as many, and the
    same tail bounds their count.

    Args:
        ratios: (n,) float, the released images' stand-out ratios (stand_out_ratio), in [0, inf].
        nearest_member: (n,) int, each released image's nearest member (position in the members),
            whose distinct values are counted.
        calibration: (n_cal,) float, the private records' stand-out ratios, in any order.
        rank: which smallest calibration ratio is the threshold, in [1, n_cal] (1: the minimum).

    Returns:
        The distinct-member count, the images standing out, the images expected to by chance
        (n * rank / (n_cal + 1)), the beta-binomial p-value in [0, 1], the threshold, n and n_cal.

    Raises:
        ValueError: no released ratio, or fewer than rank calibration ratios.
    """
    calibration = np.sort(np.asarray(calibration, np.float64))
    ratios = np.asarray(ratios, np.float64)
    n, n_cal = len(ratios), len(calibration)
    if n == 0 or n_cal < rank:
        raise ValueError(f"copy detection needs released ratios and at least {rank} calibration")
    threshold = float(calibration[rank - 1])
    standing = ratios < threshold
    count = len(np.unique(np.asarray(nearest_member)[standing]))
    p_value = float(betabinom.sf(count - 1, n, rank, n_cal - rank + 1))
    return CopyTest(
        count=count,
        images=int(standing.sum()),
        expected=n * rank / (n_cal + 1),
        p_value=p_value,
        threshold=threshold,
        n=n,
        n_calibration=n_cal,
    )


@dataclass(frozen=True)
class HoldoutSets:
    """How the non-members serve the holdout statistics. holdout: the yardstick (dataset indices
    of non-members never offered as a release), in the pool beside every member;
    member_sample: members (positions in split.members) whose ratios calibrate copy detection
    beside the holdout's; real_release: other non-members, offered as the `real` row's release
    so the reader sees what chance looks like."""

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
    """Half the non-members (at most max_holdout) become the holdout, the rest (at most max_real)
    the real row's release; at most max_holdout members calibrate copy detection (all of them
    on a CPU-sized split).

    Args:
        nonmembers: (n,) int, dataset indices of the non-members, n >= 3.
        n_members: |M|, the members in the split (a count >= 2).
        rng: draws the holdout and the member sample (a seeded numpy Generator).
        max_holdout: the most held-out records, and the most sampled members (>= 2).
        max_real: the most non-members in the real row's release (>= 0).

    Returns:
        The holdout (sorted dataset indices, ceil(n / 2) at most), the member sample (sorted
        positions in split.members) and the real row's release (sorted dataset indices, disjoint
        from the holdout).

    Raises:
        AuditError: fewer than 3 non-members, fewer than 2 members, or max_holdout < 2.
    """
    if len(nonmembers) < 3 or n_members < 2 or max_holdout < 2:
        raise AuditError(
            f"the holdout statistics need at least 3 non-members (2 held out, a real-row "
            f"release), 2 members and max_holdout >= 2; the split has {len(nonmembers)} "
            f"non-members and {n_members} members, max_holdout is {max_holdout}"
        )
    order = rng.permutation(nonmembers)
    n_holdout = min((len(order) + 1) // 2, max_holdout)
    holdout, rest = order[:n_holdout], order[n_holdout:]
    member_sample = rng.choice(n_members, min(n_members, max_holdout), replace=False)
    return HoldoutSets(
        holdout=np.sort(holdout),
        member_sample=np.sort(member_sample),
        real_release=np.sort(rest[:max_real]),
    )
