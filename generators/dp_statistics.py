"""Activation statistics of private records, released with differential privacy: the Gaussian
mechanism on clipped per-record summaries (the statistics BN matching from a DP teacher
matches; issue 28).

Each record contributes one vector: for each normalisation layer and channel, the mean over
positions of its input activation and the mean of its square. Each vector is clipped to L2 norm
`clip`, the clipped vectors are summed, and Gaussian noise of standard deviation
`noise_multiplier x clip` is added once, to every coordinate.

Privacy: adding or removing one record moves the clipped sum by at most `clip` in L2 (replacing
one, by at most 2 clip), so the release is the Gaussian mechanism with that sensitivity. Its
Renyi DP is alpha / (2 noise_multiplier^2) at every order alpha; in the RDP accountant that is
one phase (noise_multiplier, rate 1, one step), composed there with the teacher's DP-SGD
(`statistics_phase`; audit/core/accounting.py). Dividing by the record count n, which the
accounting treats as public like every DP row here, and turning means of squares into variances
are post-processing (`moments`).

The torch half (`member_summaries`, `public_clip`, `release_statistics`) computes the summaries
at a DP teacher's GroupNorm inputs, one record per row (GroupNorm normalises each record by
itself, so a record's summary does not depend on the others), sets the default clip from public
noise images, and appends the canary audit's records: each inserted canary is one more row, of
norm CANARY_SCALE x clip at a coordinate of its own, summed and noised with the members by the
same `noisy_sum`, so its released coordinate shows exactly what the mechanism adds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from audit.core.accounting import Phase
from audit.core.bn import Targets, bn_inputs
from audit.core.models import NormalizedClassifier
from audit.core.seeding import torch_generator

SUMMARY_BATCH = 256  # records per forward pass when summarising the members
CLIP_MARGIN = 1.2  # the default statistics clip over the public noise images' median norm
PUBLIC_IMAGES = 256  # uniform-noise images the default clip is measured on
CHUNK_ROWS = 512  # records summed per chunk: the canaries' rows are d + m wide
CANARY_SCALE = 1000.0  # a statistics canary's norm before clipping, in units of the clip


def clipped(vectors: np.ndarray, *, clip: float) -> np.ndarray:
    """Each record's summary scaled down to L2 norm at most `clip` (a shorter one is unchanged).

    Args:
        vectors: (n, d) float64, one summary per record.
        clip: the norm bound, > 0.

    Returns:
        (n, d) float64.

    Raises:
        ValueError: clip not positive, or vectors not two-dimensional or not finite.
    """
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError("vectors must be a finite (n, d) array")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors * np.minimum(1.0, clip / np.maximum(norms, 1e-300))


def clipped_sum(chunks: Iterable[np.ndarray], *, clip: float) -> np.ndarray:
    """The sum of every record's clipped summary, the records given in chunks of rows.

    Args:
        chunks: (n_i, d) float arrays, one row per record, all of one width d (at least one).
        clip: the per-record L2 bound, > 0.

    Returns:
        (d,) float64.

    Raises:
        ValueError: no chunk, chunks of different widths, or bad rows (see `clipped`).
    """
    total: np.ndarray | None = None
    for chunk in chunks:
        part = clipped(chunk, clip=clip).sum(axis=0)
        if total is not None and part.shape != total.shape:
            raise ValueError(f"chunks of {total.shape[0]} and {part.shape[0]} values")
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no records to sum")
    return total


def noisy_sum(
    vectors: np.ndarray | Iterable[np.ndarray],
    *,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The released sum: the clipped summaries summed, plus N(0, (noise_multiplier x clip)^2)
    on every coordinate, drawn once, in coordinate order.

    Args:
        vectors: (n, d) float64, one summary per private record, or an iterable of such
            chunks of rows (all of width d).
        clip: the per-record L2 bound, > 0 (the sum's add/remove sensitivity).
        noise_multiplier: noise standard deviation over clip, > 0.
        rng: the noise's generator (a named seed stream).

    Returns:
        (d,) float64, the only thing that leaves: every later use is post-processing.

    Raises:
        ValueError: clip or noise_multiplier not positive, or bad vectors (see `clipped`).
    """
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
    chunks = [vectors] if isinstance(vectors, np.ndarray) else vectors
    total = clipped_sum(chunks, clip=clip)
    return total + rng.normal(0.0, noise_multiplier * clip, size=total.shape)


def statistics_phase(noise_multiplier: float) -> Phase:
    """The release as the RDP accountant charges it: the Gaussian mechanism, once, on all records.

    Args:
        noise_multiplier: the release's noise standard deviation over its clip, > 0.

    Returns:
        (noise_multiplier, sample rate 1.0, 1 step).
    """
    return (noise_multiplier, 1.0, 1)


def moments(
    released: np.ndarray, *, records: int, channels: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, the channels' batch mean and variance from the released sum (post-processing).

    The summary of a record is, layer after layer, its per-channel means of x then of x^2; the
    batch mean over records and positions is the mean of the first, and the batch variance is
    the mean of the second minus the squared mean, clamped at 0 (noise can make it negative).

    Args:
        released: (d,) float64, `noisy_sum`'s output, d = 2 * sum(channels).
        records: n, the number of records summed (public), >= 1.
        channels: each layer's channel count, in the summary's order.

    Returns:
        One (mean, variance) pair of (channels,) float64 arrays per layer.

    Raises:
        ValueError: records < 1, or d not 2 * sum(channels).
    """
    if records < 1:
        raise ValueError(f"records must be at least 1, got {records}")
    released = np.asarray(released, dtype=np.float64)
    if released.shape != (2 * sum(channels),):
        raise ValueError(f"the release has {released.shape} values, not 2 x {sum(channels)}")
    averaged = released / records
    out, start = [], 0
    for width in channels:
        mean = averaged[start : start + width]
        square = averaged[start + width : start + 2 * width]
        out.append((mean, np.maximum(square - mean**2, 0.0)))
        start += 2 * width
    return out


def summaries(activations: list[np.ndarray]) -> np.ndarray:
    """Each record's summary from its activations at the normalisation layers.

    Args:
        activations: one (n, C_l, H_l, W_l) float array per layer, the layer inputs of the same
            n records.

    Returns:
        (n, 2 * sum(C_l)) float64: per layer, the per-channel means over positions of x, then
        of x^2.

    Raises:
        ValueError: no layer, or layers with different record counts.
    """
    if not activations or len({len(a) for a in activations}) != 1:
        raise ValueError("summaries need at least one layer, all of the same records")
    parts = []
    for a in activations:
        a = np.asarray(a, dtype=np.float64)
        parts += [a.mean(axis=(2, 3)), (a**2).mean(axis=(2, 3))]
    return np.concatenate(parts, axis=1)


def group_norms(teacher: nn.Module, count: int = 0) -> list[nn.GroupNorm]:
    """The teacher's GroupNorm layers where statistics are released: the first `count` in
    `modules()` order (the order the model registers them).

    Args:
        teacher: the DP teacher (after `dp_teacher`).
        count: how many, >= 0; 0 (or more than there are): all of them.

    Returns:
        Its first `count` GroupNorm modules (all where count is 0).
    """
    layers = [m for m in teacher.modules() if isinstance(m, nn.GroupNorm)]
    return layers[:count] if count else layers


@torch.no_grad()
def member_summaries(
    teacher: NormalizedClassifier, layers: list[nn.GroupNorm], x: torch.Tensor
) -> np.ndarray:
    """Each record's summary at the teacher's normalisation layers (dp_statistics.summaries).

    Args:
        teacher: the trained DP teacher, in eval mode.
        layers: the layers whose inputs are summarised, each called once per forward pass.
        x: (n, C, H, W) float images in [0, 1] on the teacher's device.

    Returns:
        (n, 2 x sum of the layers' channels) float64, the layers in the order given (not the
        order the forward pass calls them: a ResNet's shortcut normalisation runs before its
        block's, though registered after).

    Raises:
        ValueError: a layer is not called exactly once per forward pass.
    """
    parts = []
    for start in range(0, len(x), SUMMARY_BATCH):
        with bn_inputs(teacher.net, layers) as records:
            teacher(x[start : start + SUMMARY_BATCH])
            by_layer = {id(layer): act for layer, act in records}
            if len(by_layer) != len(records) or set(by_layer) != {id(g) for g in layers}:
                raise ValueError("each normalisation layer must run once per forward pass")
            acts = [by_layer[id(layer)].double().cpu().numpy() for layer in layers]
            parts.append(summaries(acts))
    return np.concatenate(parts)


def public_clip(
    teacher: NormalizedClassifier,
    layers: list[nn.GroupNorm],
    image_shape: tuple[int, int, int],
    seed: int,
) -> float:
    """The default statistics clip, from public inputs only: CLIP_MARGIN x the median L2 norm of
    the summaries of PUBLIC_IMAGES uniform-noise images through the DP teacher. It reads the
    teacher (already private) and seeded noise, so it is post-processing.

    Args:
        teacher: the trained DP teacher, in eval mode.
        layers: the layers whose statistics are released.
        image_shape: (C, H, W) of one image.
        seed: the run seed (the noise is its "bn_match_dp" / "public clip" stream).

    Returns:
        The clip, > 0.
    """
    noise = torch.rand(
        (PUBLIC_IMAGES, *image_shape), generator=torch_generator(seed, "bn_match_dp", "public clip")
    )
    device = next(teacher.parameters()).device
    vectors = member_summaries(teacher, layers, noise.to(device))
    return CLIP_MARGIN * float(np.median(np.linalg.norm(vectors, axis=1)))


def records_with_canaries(
    vectors: np.ndarray, coins: np.ndarray, *, clip: float
) -> Iterator[np.ndarray]:
    """The rows the release sums, in chunks: each member's summary followed by m zeros, then
    one row per inserted canary, CANARY_SCALE x clip at its own coordinate d + i and zero
    elsewhere (clipped to clip like any record; no member's summary touches those coordinates,
    so the released sum's first d values are the members' alone).

    Args:
        vectors: (n, d) float64 members' summaries.
        coins: (m,) bool, True where canary i is inserted (m may be 0).
        clip: the per-record bound the canaries are scaled from, > 0.

    Yields:
        (rows, d + m) float64 chunks of at most CHUNK_ROWS rows.
    """
    n, d = vectors.shape
    m = len(coins)
    for start in range(0, n, CHUNK_ROWS):
        part = vectors[start : start + CHUNK_ROWS]
        yield np.concatenate([part, np.zeros((len(part), m))], axis=1)
    inserted = np.flatnonzero(coins)
    for start in range(0, len(inserted), CHUNK_ROWS):
        ids = inserted[start : start + CHUNK_ROWS]
        rows = np.zeros((len(ids), d + m))
        rows[np.arange(len(ids)), d + ids] = CANARY_SCALE * clip
        yield rows


@dataclasses.dataclass(frozen=True)
class ReleasedStatistics:
    """What the statistics' release gives the synthesis and the audit."""

    targets: Targets  # GroupNorm layer -> its released (mean, variance), float32 (C,)
    canary_scores: np.ndarray | None  # (m,) the canaries' coordinates over the clip
    clip: float  # the per-record bound the release used


def release_statistics(
    teacher: NormalizedClassifier,
    layers: list[nn.GroupNorm],
    x: torch.Tensor,
    *,
    records: int,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    canary_coins: np.ndarray | None,
) -> ReleasedStatistics:
    """The Gaussian mechanism on the members' clipped summaries, and its post-processing into
    each layer's target mean and variance.

    Args:
        teacher: the trained DP teacher.
        layers: its GroupNorm layers whose inputs are summarised (`group_norms`).
        x: (n, C, H, W) float members in [0, 1] on the teacher's device.
        records: the public record count the sum is divided by, >= 1.
        clip: the per-record L2 bound, > 0.
        noise_multiplier: the noise actually added over the clip, >= 0 (0 only as a test fault).
        rng: the noise's generator.
        canary_coins: (m,) bool, the gradient canaries' coins (True: the canary is a record of
            this release too); None: no canary coordinates.

    Returns:
        The layers' targets, and the canaries' scores (None without coins).
    """
    vectors = member_summaries(teacher, layers, x)
    width = vectors.shape[1]
    coins = np.zeros(0, dtype=bool) if canary_coins is None else canary_coins
    rows = records_with_canaries(vectors, coins, clip=clip)
    if noise_multiplier > 0:
        released = noisy_sum(rows, clip=clip, noise_multiplier=noise_multiplier, rng=rng)
    else:  # TEST-ONLY fault (actual_statistics_noise_factor 0): the clipped sum, bare
        released = clipped_sum(rows, clip=clip)
    channels = tuple(layer.num_channels for layer in layers)
    device = x.device
    targets: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {
        layer: (
            torch.as_tensor(mean, dtype=torch.float32, device=device),
            torch.as_tensor(var, dtype=torch.float32, device=device),
        )
        for layer, (mean, var) in zip(
            layers, moments(released[:width], records=records, channels=channels), strict=True
        )
    }
    scores = None if canary_coins is None else released[width:] / clip
    return ReleasedStatistics(targets, scores, clip)
