"""Every holdout-relative privacy statistic of one query set (a release, or held-out images
offered as one), against a yardstick of all members and a holdout: the nearest members and held-out
record under a generator's augmentations, the holdout share, the copy count and exact copies
(the tests themselves are pure functions in audit/core/holdout.py). The privacy stage and
bench/gate_power.py both call these; neither needs a run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.core.copies import exact_copies, transformed_copies
from audit.core.holdout import (
    HoldoutSets,
    choose_holdout,
    copy_count_test,
    holdout_share_test,
    nearest_in_pool,
    pool_order,
    stand_out_ratio,
)
from audit.core.neighbours import Neighbours, l2_shortlist, transformed_neighbours
from audit.core.seeding import numpy_rng
from audit.core.similarity import COMPILE_MIN_PAIRS, Metric, summarise
from audit.core.transforms import Transform, augmentations

METRICS: tuple[Metric, ...] = ("ssim", "haarpsi")
POOL_SHORTLIST = 32  # pool images per query scored exactly under their best L2 transformation


@dataclass(frozen=True)
class Yardstick:
    """What every privacy row is measured against: all members and the holdout (the pool), who
    wins a tie in it, the member sample that calibrates copy detection, the transformations."""

    members: np.ndarray  # uint8 NHWC, all of split.members
    member_index: np.ndarray  # their dataset indices
    holdout: np.ndarray  # uint8 NHWC
    sets: HoldoutSets
    rank: np.ndarray  # pool order: members, then the holdout
    transforms: tuple[Transform, ...]

    def search(
        self,
        query: np.ndarray,
        *,
        k: int,
        device: str,
        exclude_member: np.ndarray | None = None,
        exclude_holdout: np.ndarray | None = None,
    ) -> dict[Metric, tuple[Neighbours, Neighbours]]:
        """Per metric, each query's k nearest members and its nearest held-out record (leaving
        out the query itself where it is one of them).

        Label-blind, so that relabelling the pool is a valid null: the plain search is exact on
        each side, and the transformed candidates are one L2 shortlist over the whole pool,
        whichever side they fall on (a shortlist per side would look deeper into the smaller
        side and find its transformed matches more often).

        Args:
            query: (nq, H, W, C) uint8 images, pixels in [0, 255], shaped as the pool's.
            k: nearest members kept per query, 1 <= k <= members (capped at members - 1 when
                excluding).
            device: where the scores are computed ("cpu", "cuda").
            exclude_member: (nq,) int, each query's own position among the members (-1: none);
                None: the queries are not members.
            exclude_holdout: (nq,) int, each query's own position in the holdout, every one
                >= 0; None: the queries are not held-out records. Ignored for the shared L2
                shortlist when exclude_member is given.

        Returns:
            Per metric ("ssim", "haarpsi"): (to_members, to_holdout), Neighbours with (nq, k)
            and (nq, 1) arrays; indices are positions in members and in holdout.
        """
        n_members = len(self.members)
        pool = np.concatenate([self.members, self.holdout])
        skip: np.ndarray | None = None
        if exclude_member is not None:
            skip = np.asarray(exclude_member)
        elif exclude_holdout is not None:
            skip = n_members + np.asarray(exclude_holdout)
        short = (
            l2_shortlist(
                query, pool, self.transforms, POOL_SHORTLIST, exclude=skip, priority=self.rank
            )
            if len(self.transforms) > 1
            else None
        )
        sides = (
            (self.members, 0, n_members, exclude_member, k),
            (self.holdout, n_members, len(pool), exclude_holdout, 1),
        )
        # one code path for both sides: the paths' float sums differ in the last digits
        compiled = len(query) * len(pool) >= COMPILE_MIN_PAIRS
        found: dict[Metric, tuple[Neighbours, Neighbours]] = {}
        for metric in METRICS:
            to_members, to_holdout = (
                transformed_neighbours(
                    query,
                    images,
                    metric,
                    transforms=self.transforms,
                    k=min(want, len(images) - (own is not None)),
                    priority=self.rank[low:high],
                    exclude=own,
                    device=device,
                    candidates=None if short is None else _on_side(short, low, high),
                    compiled=compiled,
                )
                for images, low, high, own, want in sides
            )
            found[metric] = (to_members, to_holdout)
        return found


def _on_side(short: Neighbours, low: int, high: int) -> Neighbours:
    """The shortlist entries at pool positions [low, high), re-indexed from 0; the others
    marked absent (index -1)."""
    inside = (short.indices >= low) & (short.indices < high)
    return Neighbours(
        values=np.where(inside, short.values, -np.inf),
        indices=np.where(inside, short.indices - low, -1),
        transforms=np.where(inside, short.transforms, 0),
    )


def make_yardstick(
    images: np.ndarray,
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    seed: int,
    max_holdout: int,
    max_real: int,
    nn_shift: int,
    nn_mirror: bool,
) -> Yardstick:
    """The yardstick of a split (dataset indices of members and non-members): the holdout and
    real-row release drawn from the non-members, the pool's tie order, the transformations.

    Args:
        images: (N, H, W, C) uint8, the whole dataset, pixels in [0, 255].
        members: (n_m,) int, dataset indices of the split's members.
        nonmembers: (n_nm,) int, dataset indices of the split's non-members.
        seed: the run seed (RunConfig.seed); draws the holdout and the pool order.
        max_holdout: the most held-out records, and the most calibration members
            (RunConfig.max_holdout), >= 2.
        max_real: the most non-members offered as the `real` row's release
            (RunConfig.max_reference).
        nn_shift: the largest shift searched, pixels per axis, >= 0 (RunConfig.nn_shift).
        nn_mirror: search mirrored images too (RunConfig.nn_mirror).

    Returns:
        The yardstick: members' and held-out images, the holdout sets, the pool's tie ranks
        and the transformations (identity first).

    Raises:
        AuditError: fewer than 3 non-members or 2 members, or max_holdout < 2.
        ValueError: nn_shift < 0.
    """
    sets = choose_holdout(
        nonmembers,
        len(members),
        numpy_rng(seed, "holdout"),
        max_holdout=max_holdout,
        max_real=max_real,
    )
    return Yardstick(
        members=images[members],
        member_index=members,
        holdout=images[sets.holdout],
        sets=sets,
        rank=pool_order(len(members), len(sets.holdout), numpy_rng(seed, "pool order")),
        transforms=augmentations(max_shift=nn_shift, mirror=nn_mirror),
    )


def calibration_ratios(y: Yardstick, *, device: str) -> dict[Metric, tuple[np.ndarray, np.ndarray]]:
    """Per metric, (the calibration's stand-out ratios, each held-out record's nearest-member
    score): each held-out record against the members and the other held-out records, then each
    sampled member against the other members and the holdout: private records scored against
    each other, exchangeable with a fresh draw's ratio up to one record fewer on one side.

    Args:
        y: the yardstick.
        device: where the scores are computed ("cpu", "cuda").

    Returns:
        Per metric ("ssim", "haarpsi"): (ratios, nearest): ratios (n_holdout + n_sample,)
        float64 stand-out ratios, >= 0 (inf where a record equals a held-out one but no
        member), held-out records first, n_sample = len(y.sets.member_sample); nearest
        (n_holdout,) float64, each held-out record's nearest-member score.
    """
    sample = y.sets.member_sample
    held = y.search(y.holdout, k=1, device=device, exclude_holdout=np.arange(len(y.holdout)))
    sampled = y.search(y.members[sample], k=1, device=device, exclude_member=sample)
    out: dict[Metric, tuple[np.ndarray, np.ndarray]] = {}
    for metric in METRICS:
        (h_members, h_holdout), (m_members, m_holdout) = held[metric], sampled[metric]
        ratios = np.concatenate(
            [
                stand_out_ratio(h_members.values[:, 0], h_holdout.values[:, 0]),
                stand_out_ratio(m_members.values[:, 0], m_holdout.values[:, 0]),
            ]
        )
        out[metric] = (ratios, h_members.values[:, 0])
    return out


def release_statistics(
    query: np.ndarray,
    y: Yardstick,
    calibration: dict[Metric, np.ndarray],
    *,
    rngs: dict[Metric, np.random.Generator],
    nn_k: int,
    levels: tuple[float, ...],
    device: str,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(summary columns, per-image arrays) of one query set: the nn_k nearest members of each
    image by each metric (top-1 summarised, top-k kept for the report), its nearest held-out
    record, the holdout share (rngs: its permutations, per metric), the copy count against the
    calibration ratios (per metric) and exact copies.

    Args:
        query: (nq, H, W, C) uint8 images, pixels in [0, 255], nq >= 1.
        y: the yardstick.
        calibration: per metric, the (n_cal,) float64 stand-out ratios from
            calibration_ratios, n_cal >= 1.
        rngs: per metric, the numpy Generator of the holdout share's permutations.
        nn_k: nearest members kept per image (RunConfig.nn_k), 1 <= nn_k <= members.
        levels: similarity levels summarised (RunConfig.similarity_levels).
        device: where the scores are computed ("cpu", "cuda").

    Returns:
        (summary, arrays). summary: "n_scored", summarise's "nn_{metric}_*" columns,
        "holdout_share_{metric}" with "_ci_low", "_ci_high", "_expected", "_p",
        "copy_count_{metric}" with "_images", "_expected", "_p", "copy_ratio_threshold_{metric}",
        "n_calibration", "n_pool_members", "n_pool_holdout", "exact_copies". arrays, (nq,)
        unless said: "{metric}_values", "_member", "_index", "_transform", "_topk_values",
        "_topk_member", "_topk_transform" (nq, nn_k), "_holdout_values", "_holdout_index",
        "_nearest_side", "_nearest_pool", "_ratio", "_stands_out"; "exact_copy_released",
        "exact_copy_member", "exact_copy_transform", "exact_copy_index" (one per copy).
    """
    query = np.ascontiguousarray(query)
    summary: dict[str, Any] = {"n_scored": len(query)}
    arrays: dict[str, np.ndarray] = {}
    n_members, n_pool = len(y.members), len(y.members) + len(y.holdout)
    found: dict[Metric, Neighbours] = {}
    searched = y.search(query, k=nn_k, device=device)
    for metric in METRICS:
        to_members, to_holdout = searched[metric]
        found[metric] = to_members
        best, member = to_members.values[:, 0], to_members.indices[:, 0]
        summary.update(summarise(best, prefix=f"nn_{metric}", levels=levels))
        nearest = nearest_in_pool(
            best, member, to_holdout.values[:, 0], to_holdout.indices[:, 0], y.rank, n_members
        )
        ratio = stand_out_ratio(best, to_holdout.values[:, 0])
        share = holdout_share_test(nearest, n_members, n_pool, rngs[metric])
        copies = copy_count_test(ratio, member, calibration[metric])
        arrays |= {
            f"{metric}_values": best,
            f"{metric}_member": member,  # position within split.members
            f"{metric}_index": y.member_index[member],  # index in the dataset's order
            f"{metric}_transform": to_members.transforms[:, 0],  # index into privacy.json's
            f"{metric}_topk_values": to_members.values,  # (n, k), best first
            f"{metric}_topk_member": to_members.indices,
            f"{metric}_topk_transform": to_members.transforms,
            f"{metric}_holdout_values": to_holdout.values[:, 0],
            f"{metric}_holdout_index": y.sets.holdout[to_holdout.indices[:, 0]],
            f"{metric}_nearest_side": (nearest < n_members).astype(np.float64),  # 1: a member
            f"{metric}_nearest_pool": nearest,  # members 0..|M|-1, then the holdout
            f"{metric}_ratio": ratio,
            f"{metric}_stands_out": ratio < copies.threshold,
        }
        summary |= {
            f"holdout_share_{metric}": share.share,
            f"holdout_share_{metric}_ci_low": share.ci_low,
            f"holdout_share_{metric}_ci_high": share.ci_high,
            f"holdout_share_{metric}_expected": share.expected,
            f"holdout_share_{metric}_p": share.p_value,
            f"copy_count_{metric}": copies.count,
            f"copy_count_{metric}_images": copies.images,
            f"copy_count_{metric}_expected": copies.expected,
            f"copy_count_{metric}_p": copies.p_value,
            f"copy_ratio_threshold_{metric}": copies.threshold,
        }
    summary["n_calibration"] = len(calibration[METRICS[0]])
    summary["n_pool_members"], summary["n_pool_holdout"] = n_members, len(y.holdout)
    arrays |= _exact_copies(query, y, found)
    summary["exact_copies"] = len(arrays["exact_copy_released"])
    arrays["exact_copy_index"] = y.member_index[arrays["exact_copy_member"]]  # dataset index
    return summary, arrays


def _exact_copies(
    query: np.ndarray, y: Yardstick, found: dict[Metric, Neighbours]
) -> dict[str, np.ndarray]:
    """Released images within +-2 grey levels of a member: as they are (every member checked),
    or under a transformation (each image's nearest members under one, by either metric)."""
    copies: dict[int, tuple[int, int]] = {}
    for metric in METRICS:
        released, member, kind = transformed_copies(query, y.members, found[metric], y.transforms)
        for i, m, t in zip(released.tolist(), member.tolist(), kind.tolist(), strict=True):
            copies.setdefault(i, (m, t))
    released, member = exact_copies(query, y.members)
    for i, m in zip(released.tolist(), member.tolist(), strict=True):
        copies[i] = (m, 0)  # as it is: no transformation needed
    order = sorted(copies)
    return {
        "exact_copy_released": np.array(order, np.int64),  # position within the released set
        "exact_copy_member": np.array([copies[i][0] for i in order], np.int64),
        "exact_copy_transform": np.array([copies[i][1] for i in order], np.int64),
    }
