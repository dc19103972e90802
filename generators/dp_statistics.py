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
"""

from __future__ import annotations

import numpy as np

from audit.core.accounting import Phase


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


def noisy_sum(
    vectors: np.ndarray, *, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """The released sum: the clipped summaries summed, plus N(0, (noise_multiplier x clip)^2)
    on every coordinate.

    Args:
        vectors: (n, d) float64, one summary per private record.
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
    total = clipped(vectors, clip=clip).sum(axis=0)
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
