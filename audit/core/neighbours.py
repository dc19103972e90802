"""Nearest references under a generator's augmentations (audit/core/transforms.py): for each query,
the references whose best transformed score is highest, with the transformation found.

Scoring every transformation exactly costs |transforms| times the plain search (25 shifts, 50
with mirrors). So the search runs in two parts:

1. the plain (identity) search over every reference, exact (audit/core/similarity.py): a transformed
   score never replaces a better plain one, so nothing is worse than without transformations;
2. a shortlist by pixel L2, which is exact over every reference and every transformation (one
   matrix product per transformation): the `shortlist` references nearest in L2 under any
   transformation, each with its best transformation, are then scored exactly (SSIM computed
   here in float64, HaarPSI with the engine's terms; both equal piq's within 1e-5).

A transformed copy of a reference is nearest it in L2 under the right transformation, so copies
are found; for other images the shortlist may miss the best transformed pair, which only lowers
a score towards its plain value (tests/test_neighbours.py measures the recall against scoring
every transformation). Ties are broken by `priority` (a seeded random order of the references
where the caller needs one), then by the transformation's index, identity first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from piq.functional import gaussian_filter

from audit.core.haarpsi import haarpsi_combine, haarpsi_features
from audit.core.pairwise import SSIM_K1, SSIM_K2, SSIM_KERNEL, SSIM_SIGMA
from audit.core.similarity import Metric, nearest_neighbours
from audit.core.training import to_tensor
from audit.core.transforms import IDENTITY, Transform, apply

SHORTLIST = 16  # references per query scored exactly under their best L2 transformation
L2_BLOCK_ENTRIES = 40_000_000  # (query, reference) distances held at once by the L2 search
PAIR_BLOCK = 1024  # pairs scored at once

Score = Literal["ssim", "haarpsi", "pixel_l2"]


@dataclass(frozen=True)
class Neighbours:
    """Per query, its k nearest references, best first. values: higher is nearer (SSIM,
    HaarPSI; minus the distance for pixel L2); indices: reference positions; transforms:
    indices into the transformation tuple searched (0: identity)."""

    values: np.ndarray
    indices: np.ndarray
    transforms: np.ndarray


def l2_shortlist(
    query: np.ndarray,
    reference: np.ndarray,
    transforms: tuple[Transform, ...],
    size: int,
    *,
    exclude: np.ndarray | None = None,
    priority: np.ndarray | None = None,
    device: str = "cpu",
) -> Neighbours:
    """The `size` references nearest each query in pixel L2 (images in [0, 1]) under their best
    transformation: exact, every (reference, transformation) pair is measured. values are minus
    the distances, recomputed in float64 for the pairs kept. exclude: per query, a reference
    position to leave out (-1: none), e.g. the query itself.

    Args:
        query: (nq, H, W, C) uint8 images, pixels in [0, 255].
        reference: (nr, H, W, C) uint8 images, same shape as the queries'.
        transforms: the transformations applied to the references (identity first, so that
            it keeps ties); the result's `transforms` index into it.
        size: references kept per query, >= 1; capped at nr (nr - 1 with exclude).
        exclude: (nq,) int, per query a reference position never kept (-1: none); None: none.
        priority: (nr,) int, each reference's rank among equal distances (lower wins);
            None: by position.
        device: where the distances are computed ("cpu", "cuda").

    Returns:
        Per query, `size` references best first: values (nq, size) float64, minus the L2
        distance (pixels in [0, 1]), so <= 0; indices (nq, size) int64 reference positions;
        transforms (nq, size) int64, each reference's best transformation.

    Raises:
        ValueError: no reference is left besides the excluded one.
    """
    dev = torch.device(device)
    q = to_tensor(query, dev).flatten(1)
    r = to_tensor(reference, dev)
    n_q, n_r = len(q), len(r)
    size = min(size, n_r - (0 if exclude is None else 1))
    if size < 1:
        raise ValueError("the L2 shortlist needs at least one reference besides the excluded")
    q_sq = (q * q).sum(dim=1, keepdim=True)
    rank = torch.as_tensor(_priority(priority, n_r), device=dev)
    chunk = max(1, L2_BLOCK_ENTRIES // max(1, n_r))
    indices = np.zeros((n_q, size), np.int64)
    kinds = np.zeros((n_q, size), np.int64)
    for start in range(0, n_q, chunk):
        rows = slice(start, start + chunk)
        best = torch.full((len(q[rows]), n_r), torch.inf, device=dev)
        best_t = torch.zeros((len(q[rows]), n_r), dtype=torch.long, device=dev)
        for ti, t in enumerate(transforms):  # one transformed copy of the references at a time
            moved = apply(r, t).flatten(1)
            d2 = q_sq[rows] + (moved * moved).sum(dim=1)[None, :] - 2.0 * (q[rows] @ moved.T)
            better = d2 < best  # strictly: an earlier transformation (identity first) keeps ties
            best = torch.where(better, d2, best)
            best_t = torch.where(better, torch.full_like(best_t, ti), best_t)
        if exclude is not None:
            own = torch.as_tensor(exclude[rows], device=dev)
            has = own >= 0
            best[has.nonzero()[:, 0], own[has]] = torch.inf
        top = _smallest_by_rank(best, rank, size)
        indices[rows] = top.cpu().numpy()
        kinds[rows] = best_t.gather(1, top).cpu().numpy()
    rows_of = np.repeat(np.arange(n_q), size)
    pairs_q, pairs_r, pairs_t = rows_of, indices.ravel(), kinds.ravel()
    distances = np.empty(len(pairs_q))
    for ti in np.unique(pairs_t):
        sel = np.nonzero(pairs_t == ti)[0]
        for part in np.array_split(sel, max(1, -(-len(sel) // PAIR_BLOCK))):
            a = q[torch.as_tensor(pairs_q[part], device=dev)].double()
            b = apply(r[torch.as_tensor(pairs_r[part], device=dev)], transforms[ti]).flatten(1)
            distances[part] = (a - b.double()).norm(dim=1).cpu().numpy()
    return _ranked(-distances.reshape(n_q, size), indices, kinds, size, _priority(priority, n_r))


def _smallest_by_rank(values: torch.Tensor, rank: torch.Tensor, size: int) -> torch.Tensor:
    """Per row, the positions of the `size` smallest values, a tie at the last place going to
    the lower rank (a plain topk would cut it by position, i.e. by which side of a pool an
    image is on)."""
    top = values.topk(size, dim=1, largest=False)  # ascending: the strictly smaller ones first
    kth = top.values[:, -1:]
    below = (top.values < kth).sum(dim=1, keepdim=True)  # these always make the cut
    tied = torch.where(values == kth, rank[None, :].to(values.dtype), torch.inf)
    by_rank = tied.topk(size, dim=1, largest=False).indices  # the tied entries, lowest rank first
    slot = torch.arange(size, device=values.device)[None, :]
    from_ties = by_rank.gather(1, (slot - below).clamp(min=0))
    return torch.where(slot >= below, from_ties, top.indices)


def _priority(priority: np.ndarray | None, n: int) -> np.ndarray:
    return np.arange(n) if priority is None else np.asarray(priority, np.int64)


def _ranked(
    values: np.ndarray, indices: np.ndarray, kinds: np.ndarray, k: int, priority: np.ndarray
) -> Neighbours:
    """Per row, each reference once (its best value; ties: the lower transformation index),
    the k best by value, ties by priority; entries valued -inf are dropped first."""
    n, width = values.shape
    row = np.repeat(np.arange(n), width)
    v, i, t = values.ravel(), indices.ravel(), kinds.ravel()
    order = np.lexsort((t, -v, i, row))  # per row and reference: best value, then identity
    first = np.ones(len(order), bool)
    first[1:] = (row[order][1:] != row[order][:-1]) | (i[order][1:] != i[order][:-1])
    keep = order[first]
    keep = keep[np.lexsort((t[keep], priority[i[keep]], -v[keep], row[keep]))]
    out_v = np.full((n, k), -np.inf)
    out_i = np.zeros((n, k), np.int64)
    out_t = np.zeros((n, k), np.int64)
    rows_kept = row[keep]
    starts = np.searchsorted(rows_kept, np.arange(n))
    position = np.arange(len(keep)) - starts[rows_kept]
    sel = position < k
    out_v[rows_kept[sel], position[sel]] = v[keep][sel]
    out_i[rows_kept[sel], position[sel]] = i[keep][sel]
    out_t[rows_kept[sel], position[sel]] = t[keep][sel]
    if np.isneginf(out_v).any():
        raise ValueError(f"fewer than k = {k} references to rank")
    return Neighbours(out_v, out_i, out_t)


def paired_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """piq.ssim(x[i], y[i]) for each i (kernel 11, sigma 1.5, data range 1, valid windows, piq's
    downsampling), computed in float64 from channel-centred images with the separable kernel.

    Args:
        x: (n, C, H, W) float tensor, pixels in [0, 1], at least 11 px a side after piq's
            downsampling.
        y: (n, C, H, W) float tensor, pixels in [0, 1], paired with x row by row.

    Returns:
        (n,) float64 SSIM of each pair, in [-1, 1].
    """
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1:
        x, y = F.avg_pool2d(x, kernel_size=factor), F.avg_pool2d(y, kernel_size=factor)
    x, y = x.double(), y.double()
    offset_x = x.mean(dim=(2, 3), keepdim=True)
    offset_y = y.mean(dim=(2, 3), keepdim=True)
    xc, yc = x - offset_x, y - offset_y
    c = x.shape[1]
    g = gaussian_filter(SSIM_KERNEL, SSIM_SIGMA, device=x.device, dtype=x.dtype)[0].sum(dim=1)
    across = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    down = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, across, groups=c), down, groups=c)

    mu_xc, mu_yc = blur(xc), blur(yc)
    mu_x, mu_y = mu_xc + offset_x, mu_yc + offset_y
    var_x = blur(xc * xc) - mu_xc * mu_xc
    var_y = blur(yc * yc) - mu_yc * mu_yc
    cov = blur(xc * yc) - mu_xc * mu_yc
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


def paired_haarpsi(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """piq.haarpsi(x[i], y[i]) for each i, through the engine's own terms (audit/core/haarpsi.py),
    which also score two structureless images 1 where piq gives inf.

    Args:
        x: (n, C, H, W) float tensor, pixels in [0, 1], C = 1 or 3, at least 16 px a side.
        y: (n, C, H, W) float tensor, pixels in [0, 1], paired with x row by row.

    Returns:
        (n,) HaarPSI of each pair in x's dtype, in [0, 1].

    Raises:
        ValueError: the images are smaller than 16 px on a side.
    """
    fx, fy = haarpsi_features(x), haarpsi_features(y)
    return haarpsi_combine(fx.magnitudes[:, None], fy.magnitudes[:, None])[:, 0]


def paired_scores(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """metric(x[i], y[i]) for float NCHW images in [0, 1], in blocks of PAIR_BLOCK pairs.

    Args:
        x: (n, C, H, W) float tensor, pixels in [0, 1].
        y: (n, C, H, W) float tensor, pixels in [0, 1], paired with x row by row.
        metric: "ssim"; any other value scores HaarPSI.

    Returns:
        (n,) float64 scores on x's device (an empty CPU tensor when n = 0).
    """
    out = []
    for start in range(0, len(x), PAIR_BLOCK):
        a, b = x[start : start + PAIR_BLOCK], y[start : start + PAIR_BLOCK]
        if metric == "ssim":
            out.append(paired_ssim(a, b))
        else:
            out.append(paired_haarpsi(a, b).double())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def transformed_neighbours(
    query: np.ndarray,
    reference: np.ndarray,
    metric: Metric,
    *,
    transforms: tuple[Transform, ...] = (IDENTITY,),
    k: int = 1,
    shortlist: int = SHORTLIST,
    priority: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    device: str = "cpu",
    candidates: Neighbours | None = None,
    compiled: bool | None = None,
) -> Neighbours:
    """The k references with the highest metric(query, t(reference)) over t in transforms (the
    first must be the identity), best first. uint8 NHWC images. exclude: per query, a reference
    position never returned (-1: none). priority: the rank of each reference among equals.
    candidates: this query's L2 shortlist against this reference, if already computed (it does
    not depend on the metric); entries with index -1 are absent. compiled: the plain search's
    path (None: by its size; callers comparing two searches' scores fix it, since the paths'
    float sums differ in the last digits).

    Args:
        query: (nq, H, W, C) uint8 images, pixels in [0, 255].
        reference: (nr, H, W, C) uint8 images, same shape as the queries'.
        metric: "ssim" or "haarpsi".
        transforms: the transformations searched, the identity first; the result's
            `transforms` index into it.
        k: references per query, 1 <= k <= nr (nr - 1 with exclude).
        shortlist: references per query scored exactly under their best L2 transformation
            (used only when candidates is None and there are transformations besides the
            identity).
        priority: (nr,) int, each reference's rank among equal scores (lower wins); None: by
            position.
        exclude: (nq,) int, per query a reference position never returned (-1: none); None:
            none.
        device: where the scores are computed ("cpu", "cuda").
        candidates: the L2 shortlist (l2_shortlist, same transforms) of these queries against
            this reference; None: computed here.
        compiled: the plain search's path (nearest_neighbours); None: by its size.

    Returns:
        Per query, k references best first: values (nq, k) float64 scores (SSIM in [-1, 1],
        HaarPSI in [0, 1]); indices (nq, k) int64 reference positions; transforms (nq, k)
        int64, indices into `transforms` (0: identity).

    Raises:
        ValueError: transforms is empty or does not start with the identity; k is out of
            range; fewer than k references to rank.
    """
    if not transforms or not transforms[0].is_identity:
        raise ValueError("the transformations must start with the identity")
    n_r = len(reference)
    rank = _priority(priority, n_r)
    extra = 0 if exclude is None else 1
    if not 1 <= k <= n_r - extra:
        raise ValueError(f"k must lie in [1, {n_r - extra}], got {k}")
    order = np.argsort(rank, kind="stable")  # the plain search breaks ties by position
    plain_v, plain_i = nearest_neighbours(
        query,
        reference[order],
        metric,
        k=min(k + extra, n_r),
        device=device,
        progress=False,
        compiled=compiled,
    )
    values = [plain_v.astype(np.float64)]
    indices = [order[plain_i]]
    kinds = [np.zeros_like(plain_i)]
    if len(transforms) > 1:
        short = candidates or l2_shortlist(
            query, reference, transforms, shortlist, exclude=exclude, priority=rank, device=device
        )
        moved = (short.transforms != 0) & (short.indices >= 0)  # index -1: no candidate
        scores = np.full(short.values.shape, -np.inf)
        q_rows, cols = np.nonzero(moved)
        if len(q_rows):
            dev = torch.device(device)
            q_img, r_img = to_tensor(query, dev), to_tensor(reference, dev)
            ref_pos, kind = short.indices[q_rows, cols], short.transforms[q_rows, cols]
            pairs = np.argsort(kind, kind="stable")  # grouped by transformation
            groups = np.split(pairs, np.flatnonzero(np.diff(kind[pairs])) + 1)
            targets = torch.cat(
                [
                    apply(r_img[torch.as_tensor(ref_pos[g], device=dev)], transforms[kind[g[0]]])
                    for g in groups
                ]
            )
            sources = q_img[torch.as_tensor(q_rows[pairs], device=dev)]
            found = paired_scores(sources, targets, metric).cpu().numpy()
            scores[q_rows[pairs], cols[pairs]] = found
        values.append(scores)
        indices.append(short.indices)
        kinds.append(short.transforms)
    all_v = np.concatenate(values, axis=1)
    all_i = np.concatenate(indices, axis=1)
    if exclude is not None:
        all_v[all_i == np.asarray(exclude)[:, None]] = -np.inf
    return _ranked(all_v, all_i, np.concatenate(kinds, axis=1), k, rank)


def brute_force_neighbours(
    query: np.ndarray,
    reference: np.ndarray,
    metric: Metric,
    *,
    transforms: tuple[Transform, ...],
    k: int = 1,
    device: str = "cpu",
) -> Neighbours:
    """Every (reference, transformation) pair scored by the exact engine: |transforms| times the
    cost of transformed_neighbours' plain search. The oracle its shortlist is measured against.

    Args:
        query: (nq, H, W, C) uint8 images, pixels in [0, 255].
        reference: (nr, H, W, C) uint8 images, same shape as the queries'.
        metric: "ssim" or "haarpsi".
        transforms: the transformations scored; the result's `transforms` index into it.
        k: references per query, 1 <= k <= nr.
        device: where the scores are computed ("cpu", "cuda").

    Returns:
        Per query, k references best first, each once under its best transformation: values
        (nq, k) float64 scores; indices (nq, k) int64 reference positions; transforms (nq, k)
        int64 indices into `transforms`.

    Raises:
        ValueError: k is outside [1, nr].
    """
    r = to_tensor(reference, torch.device(device))
    moved = torch.cat([apply(r, t) for t in transforms])
    values, flat = nearest_neighbours(
        to_tensor(query, torch.device(device)),
        moved,
        metric,
        k=min(len(moved), k * len(transforms)),
        device=device,
        progress=False,
    )
    kinds, indices = np.divmod(flat, len(r))
    return _ranked(values.astype(np.float64), indices, kinds, k, np.arange(len(r)))
