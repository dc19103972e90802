"""Exact copies: released images within a few grey levels of a member at every pixel, as they
are or moved by the transformations a generator's augmentation yields."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from audit.core.neighbours import Neighbours
from audit.core.transforms import Transform, apply_uint8, overlap

EXACT_TOLERANCE = 2  # grey levels: an "exact copy" matches a member to within +-2 at every pixel


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
    means prune the pairs, then the survivors are compared pixel by pixel.

    Args:
        released: (N, H, W, C) uint8 released images, pixels in [0, 255].
        members: (M, H, W, C) uint8 member images, the same image shape.
        tolerance: the largest difference allowed at any pixel, in grey levels (>= 0).
        block: released images pruned against every member at once (a count >= 1).
        pair_chunk: surviving pairs compared pixel by pixel at once (a count >= 1).

    Returns:
        (released positions, member positions): two (n_copies,) int64 arrays, in increasing
        released position, the member being the lowest-index match.

    Raises:
        ValueError: the released and member images differ in shape.
    """
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


def transformed_copies(
    released: np.ndarray,
    members: np.ndarray,
    neighbours: Neighbours,
    transforms: tuple[Transform, ...],
    *,
    tolerance: int = EXACT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(released positions, member positions, transformation indices) of released images within
    `tolerance` of a transformed member at every pixel the two share (the shifted-in edge is not
    compared), among each image's nearest members under a transformation (the search found
    them: an exact transformed copy scores as high as any image can).

    Args:
        released: (N, H, W, C) uint8 released images, pixels in [0, 255].
        members: (M, H, W, C) uint8 member images.
        neighbours: each released image's nearest members, (N, k) arrays: member positions and
            indices into `transforms` (entries with index 0, the identity, are skipped: exact_copies
            covers them).
        transforms: the transformations searched, the identity first (what neighbours indexes).
        tolerance: the largest difference allowed at any shared pixel, in grey levels (>= 0).

    Returns:
        Three (n_copies,) int64 arrays in increasing released position: released positions,
        member positions and transformation indices (>= 1); per image, its first matching
        neighbour in the search's order.
    """
    h, w = released.shape[1:3]
    found: dict[int, tuple[int, int]] = {}
    rows, cols = np.nonzero(neighbours.transforms != 0)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if i in found:
            continue
        m, ti = int(neighbours.indices[i, j]), int(neighbours.transforms[i, j])
        moved = apply_uint8(members[m : m + 1], transforms[ti])[0]
        ys, xs = overlap(transforms[ti], h, w)
        gap = np.abs(released[i, ys, xs].astype(np.int16) - moved[ys, xs].astype(np.int16))
        if gap.max() <= tolerance:
            found[i] = (m, ti)
    order = sorted(found)
    return (
        np.array(order, np.int64),
        np.array([found[i][0] for i in order], np.int64),
        np.array([found[i][1] for i in order], np.int64),
    )
