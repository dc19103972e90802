"""Exact nearest neighbours under piq's SSIM and HaarPSI, for whole datasets.

``nearest_neighbours`` computes each image's per-image terms once (audit/core/pairwise.py) and
scores every (query, reference) pair in blocks sized to a memory budget, keeping a running top-k.
Every score is piq's (``reduction='none'``, default parameters, ``data_range=1``) up to float32
summation order (tests hold it to 1e-5); no pair is skipped, so the top-k is the brute-force top-k,
ties broken by the lower reference index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch._dynamo.exc
from tqdm import tqdm

from audit.core import haarpsi, pairwise
from audit.core.training import to_tensor

log = logging.getLogger(__name__)

Metric = Literal["ssim", "haarpsi"]
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes for one block of pairs
COMPILE_MIN_PAIRS = 500_000  # below this, torch.compile's start-up costs more than it saves
REFERENCE_BLOCK = 1024  # references per block: long enough rows for efficient products
# the fused CPU path's SSIM is fastest when one output column's horizontal sums (H x block
# pairs) stay in the last-level cache until _ssim_column reads them: on a 2-core CPU with 32 MiB
# of L3, blocks of 46 x 1,000 (6 MiB of sums) ran 1.1-1.6 us per pair against 1.7-2.0 at 23 x
# 1,000 and 1.9-2.7 at 92 x 1,000
SSIM_CPU_FUSED_BUDGET = 6 * 2**20
# HaarPSI's fused combination streams its block once; a few hundred MB kept it fastest
HAARPSI_CPU_FUSED_BUDGET = 384 * 2**20


@dataclass(frozen=True)
class Engine:
    features: Callable[[torch.Tensor], Any]  # per-image work, once per image
    prepare_reference: Callable[..., Any]  # (block, compiled=) -> per-block work, once each
    pairwise: Callable[..., torch.Tensor]  # (query block, reference block) -> scores
    bytes_per_pair: Callable[..., int]
    cpu_fused_budget: int  # the most bytes one block takes on the fused path on a CPU


ENGINES: dict[str, Engine] = {
    "ssim": Engine(
        pairwise.ssim_features,
        pairwise.ssim_prepare_reference,
        pairwise.ssim_pairwise,
        pairwise.ssim_bytes_per_pair,
        SSIM_CPU_FUSED_BUDGET,
    ),
    "haarpsi": Engine(
        haarpsi.haarpsi_features,
        lambda features, compiled=False: features,
        haarpsi.haarpsi_pairwise,
        haarpsi.haarpsi_bytes_per_pair,
        HAARPSI_CPU_FUSED_BUDGET,
    ),
}
_compile_failed = False


def _as_float(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("numpy images must be uint8 NHWC")
        return to_tensor(images, device)
    if images.ndim != 4:
        raise ValueError("tensor images must be float NCHW in [0, 1]")
    return images.to(device=device, dtype=torch.float32).clamp(0, 1)


def plan_blocks(
    n_query: int, n_reference: int, bytes_per_pair: int, budget: int
) -> tuple[int, int]:
    """(query block, reference block) whose pairs fit in ``budget`` bytes, each as even as it can
    be (the last block is padded to full size, so 1,025 references make two blocks of 513).

    Args:
        n_query: query images, >= 1.
        n_reference: reference images, >= 1.
        bytes_per_pair: peak bytes one (query, reference) pair costs, >= 1.
        budget: bytes one block of pairs may take.

    Returns:
        (query block, reference block) sizes in images, each >= 1; the reference block at most
        REFERENCE_BLOCK.
    """
    max_pairs = max(1, budget // bytes_per_pair)
    ref_block = _even(n_reference, max(1, min(REFERENCE_BLOCK, max_pairs)))
    query_block = _even(n_query, max(1, max_pairs // ref_block))
    return query_block, ref_block


def _even(n: int, largest: int) -> int:
    blocks = -(-n // largest)
    return -(-n // blocks)


def nearest_neighbours(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    metric: Metric = "ssim",
    k: int = 1,
    device: str | torch.device | None = None,
    memory_budget: int | None = None,
    *,
    compiled: bool | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the k most similar reference images, best first.

    Inputs are uint8 NHWC arrays or float NCHW tensors in [0, 1], one or three channels, equal
    shapes. Returns ``(values, indices)``, each of shape (len(query), k). ``compiled`` fuses the
    elementwise part with torch.compile (None: when there are at least COMPILE_MIN_PAIRS pairs).

    Args:
        query: (nq, H, W, C) uint8 array (pixels in [0, 255]) or (nq, C, H, W) float tensor
            (clamped to [0, 1], cast to float32); C = 1 or 3.
        reference: (nr, ...) images in either form, each image shaped as the queries'.
        metric: "ssim" or "haarpsi".
        k: neighbours per query, 1 <= k <= nr.
        device: where the scores are computed; None: the CPU.
        memory_budget: bytes for one block of pairs; None (or 0): DEFAULT_MEMORY_BUDGET. On a
            CPU the fused path takes at most the engine's cpu_fused_budget.
        compiled: fuse with torch.compile; None: when nq * nr >= COMPILE_MIN_PAIRS. If the
            compiler fails, this and every later call run eagerly.
        progress: show a tqdm bar over the blocks.

    Returns:
        (values, indices): values (nq, k) float32, each query's best scores, best first (SSIM in
        [-1, 1], HaarPSI in [0, 1]); indices (nq, k) int64, the references' positions, ties
        going to the lower position.

    Raises:
        ValueError: an unknown metric; numpy images not uint8 4-D or tensors not 4-D; query and
            reference image shapes differ; not 1 or 3 channels; k outside [1, nr]; images too
            small for the metric (SSIM 11 px, HaarPSI 16 px).
    """
    global _compile_failed
    if metric not in ENGINES:
        raise ValueError(f"unknown metric {metric!r}; choose ssim or haarpsi")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    q, r = _as_float(query, dev), _as_float(reference, dev)
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(
            f"query images {tuple(q.shape[1:])} differ from reference {tuple(r.shape[1:])}"
        )
    if q.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {q.shape[1]}")
    if not 1 <= k <= len(r):
        raise ValueError(f"k must lie in [1, {len(r)}], got {k}")
    engine = ENGINES[metric]
    if compiled is None:
        compiled = len(q) * len(r) >= COMPILE_MIN_PAIRS
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    with torch.no_grad():
        fq, fr = engine.features(q), engine.features(r)
        if compiled and not _compile_failed:
            try:
                return _search(engine, fq, fr, k, budget, metric, compiled=True, progress=progress)
            except torch._dynamo.exc.TorchDynamoException as exc:
                # only the compiler's own failures (no C++ compiler, an unsupported backend):
                # out-of-memory and real bugs propagate. Log once, then stay eager, re-planned
                # for the eager path's larger per-pair cost
                _compile_failed = True
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                log.warning(
                    "torch.compile failed (%s: %s); nearest neighbours run eagerly from now on",
                    type(exc).__name__,
                    first[:200],
                )
        return _search(engine, fq, fr, k, budget, metric, compiled=False, progress=progress)


def _search(
    engine: Engine,
    fq: Any,
    fr: Any,
    k: int,
    budget: int,
    metric: str,
    *,
    compiled: bool,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Every block of pairs, planned for this path's per-pair cost, merged into a running top-k."""
    n_q, n_r = len(fq), len(fr)
    q_block, r_block = _blocks(engine, fq, n_q, n_r, budget, compiled=compiled)
    workspace = pairwise.Workspace()
    best_values = torch.full((n_q, k), -torch.inf)
    best_indices = torch.zeros((n_q, k), dtype=torch.long)
    blocks = len(range(0, n_r, r_block)) * len(range(0, n_q, q_block))
    bar = tqdm(
        total=blocks,
        desc=f"nn {metric}",
        unit="block",
        disable=None if progress else True,
        leave=False,
    )
    with bar:
        for rs in range(0, n_r, r_block):  # reference-side work is prepared once per block
            rows_r = min(r_block, n_r - rs)
            block = fr.take(rs, rs + r_block).padded(r_block)
            r_part = engine.prepare_reference(block, compiled=compiled)
            for qs in range(0, n_q, q_block):
                rows_q = min(q_block, n_q - qs)
                q_part = fq.take(qs, qs + q_block).padded(q_block)
                scores = engine.pairwise(q_part, r_part, compiled=compiled, workspace=workspace)
                scores = scores[:rows_q, :rows_r].float().cpu()
                rows = slice(qs, qs + rows_q)
                merged_v = torch.cat([best_values[rows], scores], dim=1)
                new = torch.arange(rs, rs + rows_r).expand(rows_q, -1)
                merged_i = torch.cat([best_indices[rows], new], dim=1)
                best_values[rows], pos = _stable_topk(merged_v, merged_i, k)
                best_indices[rows] = merged_i.gather(1, pos)
                bar.update(1)
    return best_values.numpy(), best_indices.numpy()


def _blocks(
    engine: Engine, features: Any, n_q: int, n_r: int, budget: int, *, compiled: bool
) -> tuple[int, int]:
    per_pair = engine.bytes_per_pair(features, compiled=compiled)
    if compiled and _device_of(features).type == "cpu":
        budget = min(budget, engine.cpu_fused_budget)
    return plan_blocks(n_q, n_r, per_pair, budget)


def block_shape(
    n_query: int,
    n_reference: int,
    metric: Metric,
    image_shape: tuple[int, ...],
    *,
    device: str | torch.device = "cpu",
    compiled: bool | None = None,
    memory_budget: int | None = None,
) -> tuple[int, int]:
    """The (query, reference) block nearest_neighbours would use for these sizes: one call on
    that many images compiles the fused kernels for a larger search's shapes (benchmarks time
    torch.compile's start-up apart). image_shape: one image's, HWC as numpy arrays give it.

    Args:
        n_query: query images, >= 1.
        n_reference: reference images, >= 1.
        metric: "ssim" or "haarpsi".
        image_shape: one image's (H, W, C), C = 1 or 3.
        device: the device the search would run on (a fused search on a CPU gets a smaller
            budget).
        compiled: the fused path's blocks; None: as nearest_neighbours decides, by
            n_query * n_reference >= COMPILE_MIN_PAIRS.
        memory_budget: bytes for one block of pairs; None (or 0): DEFAULT_MEMORY_BUDGET.

    Returns:
        (query block, reference block) sizes in images, each >= 1.
    """
    if compiled is None:
        compiled = n_query * n_reference >= COMPILE_MIN_PAIRS
    blank = np.zeros((1, *image_shape), dtype=np.uint8)
    engine = ENGINES[metric]
    with torch.no_grad():
        features = engine.features(_as_float(blank, torch.device(device)))
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    return _blocks(engine, features, n_query, n_reference, budget, compiled=compiled)


def _device_of(features: Any) -> torch.device:
    tensor = features.images if hasattr(features, "images") else features.magnitudes
    return torch.device(tensor.device)


def _stable_topk(
    values: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k by value, ties broken by the lower reference index (results do not depend on the
    blocks). Returns the values and their positions in the inputs."""
    by_index = indices.argsort(dim=1, stable=True)
    v = values.gather(1, by_index)
    order = (-v).argsort(dim=1, stable=True)[:, :k]
    pos = by_index.gather(1, order)
    return values.gather(1, pos), pos


def level_suffix(level: float) -> str:
    """A similarity level in a column name, safe for pandas and jq: 0.9 -> "0_9".

    Args:
        level: the similarity level (e.g. 0.5; a minus sign becomes "m").

    Returns:
        The level formatted with "%g", "." replaced by "_" and "-" by "m".
    """
    return f"{level:g}".replace(".", "_").replace("-", "m")


def summarise(values: np.ndarray, *, prefix: str, levels: tuple[float, ...]) -> dict[str, float]:
    """mean, 95th percentile, max and the share above each level of nearest-neighbour scores.

    Args:
        values: nearest-neighbour scores, any shape (flattened), at least one; float.
        prefix: the column names' prefix (e.g. "nn_ssim").
        levels: similarity levels; each gets the share of scores strictly above it.

    Returns:
        Floats keyed "{prefix}_mean", "{prefix}_p95", "{prefix}_max" and, per level,
        "{prefix}_frac_above_{level_suffix(level)}" (a share in [0, 1]).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    out = {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_p95": float(np.percentile(v, 95)),
        f"{prefix}_max": float(v.max()),
    }
    for t in levels:
        out[f"{prefix}_frac_above_{level_suffix(t)}"] = float((v > t).mean())
    return out
