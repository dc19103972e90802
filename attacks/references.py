"""Who the membership attacks score, and what reference pipelines (`--mia-refs N`, run by
attacks/tasks/refs.py) give them.

Each reference repeats the audited pipeline on a random half of the members + non-members pool:
train a reference target with the target's recipe -> BN-synthesise from it with the same generator
settings -> retrain one model per K with the utility recipe. Every pool record is IN for exactly
N // 2 references. What the attacks need is saved per reference (refs/ref<i>.npz): the IN mask,
the logits of each reference model on the pool and on the population records, and its synthetic
sets (the reference synthetic sets that calibrate the release attack).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttackRecords:
    """Who is attacked: the pool (members + non-members, the records reference models train on),
    the candidates scored (every member and every non-member, each side capped at
    mia_candidates) and the population records (from the test split; no model trains on
    them)."""

    pool: np.ndarray  # dataset indices, sorted
    pool_is_member: np.ndarray
    candidates: np.ndarray  # positions in pool
    population: np.ndarray  # dataset indices


def reference_size_note(n_members: int, n_nonmembers: int) -> str | None:
    """Why LiRA/RMIA may mislead when the reference models do not see as many records as the
    target did (they train on half the pool), or None when they do.

    Args:
        n_members: the target's training records (members), >= 0.
        n_nonmembers: the non-members in the pool, >= 0.

    Returns:
        A one-paragraph warning naming both training-set sizes, or None when the counts are
        equal (a reference then trains on as many records as the target).
    """
    if n_members == n_nonmembers:
        return None
    return (
        f"reference targets train on half the pool ({(n_members + n_nonmembers) // 2} records), "
        f"the target on its {n_members} members: LiRA and RMIA assume models of the same "
        "training-set size; give equal --max-members and --max-nonmembers"
    )


SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dy, dx) in pixels; (0, 0) first


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 NHWC images moved by (dy, dx) pixels, the uncovered border black (like the training
    crop's zero padding).

    Args:
        images: (N, H, W, C) uint8, pixels in [0, 255].
        dy: rows to move down (negative: up), in pixels, |dy| < H.
        dx: columns to move right (negative: left), in pixels, |dx| < W.

    Returns:
        (N, H, W, C), images' dtype, a new array; the |dy| rows and |dx| columns uncovered are 0.
    """
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def query_views(images: np.ndarray, *, augment: bool, hflip: bool) -> list[np.ndarray]:
    """LiRA's queries of each record (Carlini et al. 2022, augmented queries): the record, then
    copies shifted one pixel each way and, where mirrored images are valid, the mirrored copies
    of all of them. The first view is the record itself.

    Args:
        images: (N, H, W, C) uint8 records, pixels in [0, 255].
        augment: False: the records alone (one view); True: the shifted copies as well.
        hflip: with augment, add a left-right mirrored copy of every view (for data where
            mirrored images are valid); ignored without augment.

    Returns:
        (N, H, W, C) uint8 views, in SHIFTS order: 1 (no augment), 5, or 10 with the mirrors
        after the shifts; views[0] holds the unshifted records (the mirrors are strided views).
    """
    if not augment:
        return [images]
    views = [shifted(images, dy, dx) for dy, dx in SHIFTS]
    return views + [view[:, :, ::-1] for view in views] if hflip else views
