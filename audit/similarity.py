"""Nearest neighbours under piq's SSIM and HaarPSI.

First version: exact by construction, because every pair is scored by piq itself
(``reduction='none'``, default parameters, ``data_range=1``). Pairs are formed in chunks so that
memory stays bounded; a later engine shares the per-image work and keeps this signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import piq
import torch
from tqdm import tqdm

from audit.training import to_tensor

Metric = Literal["ssim", "haarpsi"]
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes for one chunk of pairs and piq's intermediates
_PIQ_OVERHEAD = 24  # piq's intermediates per pair, in multiples of one image pair (measured ~16)


def _as_float(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("numpy images must be uint8 NHWC")
        return to_tensor(images, device)
    if images.ndim != 4:
        raise ValueError("tensor images must be float NCHW in [0, 1]")
    return images.to(device=device, dtype=torch.float32)


def pair_scores(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """piq's score of each pair (x[i], y[i]); float NCHW in [0, 1]."""
    fn: Callable[..., torch.Tensor] = piq.ssim if metric == "ssim" else piq.haarpsi
    return fn(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0, reduction="none")


def nearest_neighbours(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    metric: Metric = "ssim",
    k: int = 1,
    device: str | torch.device | None = None,
    memory_budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the k most similar reference images, best first.

    Inputs are uint8 NHWC arrays or float NCHW tensors in [0, 1], with equal channels and size.
    Returns ``(values, indices)``, each of shape (len(query), k). Ties keep the lower index.
    """
    if metric not in ("ssim", "haarpsi"):
        raise ValueError(f"unknown metric {metric!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    q = _as_float(query, dev)
    r = _as_float(reference, dev)
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(
            f"query images {tuple(q.shape[1:])} differ from reference {tuple(r.shape[1:])}"
        )
    if not 1 <= k <= len(r):
        raise ValueError(f"k must lie in [1, {len(r)}], got {k}")
    pair_bytes = 2 * q[0].numel() * 4 * _PIQ_OVERHEAD
    max_pairs = max(1, (memory_budget or DEFAULT_MEMORY_BUDGET) // pair_bytes)
    ref_chunk = max(1, min(len(r), max_pairs))
    query_chunk = max(1, max_pairs // ref_chunk)
    best_values = torch.full((len(q), k), -torch.inf)
    best_indices = torch.zeros((len(q), k), dtype=torch.long)
    with torch.no_grad():
        starts = range(0, len(q), query_chunk)
        for qs in tqdm(starts, desc=f"nn {metric}", unit="chunk", disable=None, leave=False):
            qb = q[qs : qs + query_chunk]
            values = [best_values[qs : qs + len(qb)]]
            indices = [best_indices[qs : qs + len(qb)]]
            for rs in range(0, len(r), ref_chunk):
                rb = r[rs : rs + ref_chunk]
                x = qb[:, None].expand(len(qb), len(rb), *qb.shape[1:]).reshape(-1, *qb.shape[1:])
                y = rb[None].expand(len(qb), len(rb), *rb.shape[1:]).reshape(-1, *rb.shape[1:])
                scores = pair_scores(x, y, metric).reshape(len(qb), len(rb)).float().cpu()
                values.append(scores)
                indices.append(torch.arange(rs, rs + len(rb)).expand(len(qb), -1))
                # merge as we go so memory does not grow with len(reference)
                merged_v, merged_i = torch.cat(values, 1), torch.cat(indices, 1)
                top_v, pos = _stable_topk(merged_v, merged_i, k)
                values, indices = [top_v], [merged_i.gather(1, pos)]
            best_values[qs : qs + len(qb)] = values[0]
            best_indices[qs : qs + len(qb)] = indices[0]
    return best_values.numpy(), best_indices.numpy()


def _stable_topk(
    values: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k by value, ties broken by the lower reference index (so results do not depend on
    chunking)."""
    # sort by index first, then a stable sort by value keeps index order within ties
    by_index = indices.argsort(dim=1, stable=True)
    v = values.gather(1, by_index)
    order = (-v).argsort(dim=1, stable=True)[:, :k]
    pos = by_index.gather(1, order)
    return values.gather(1, pos), pos


def summarise(
    values: np.ndarray, *, prefix: str, thresholds: tuple[float, ...]
) -> dict[str, float]:
    """mean, 95th percentile, max and the share above each threshold of nearest-neighbour scores."""
    v = np.asarray(values, dtype=np.float64).ravel()
    out = {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_p95": float(np.percentile(v, 95)),
        f"{prefix}_max": float(v.max()),
    }
    for t in thresholds:
        out[f"{prefix}_frac_above_{t:g}"] = float((v > t).mean())
    return out
