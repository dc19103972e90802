"""All-pairs HaarPSI with piq's definitions (piq.haarpsi, scales 3, subsample, c 30, alpha 4.2),
split as audit/core/pairwise.py splits SSIM: the Haar coefficients of the Y channel and the I/Q
magnitudes are per image; the similarity maps, the weights max(|x|, |y|) and the weighted
logistic mean are pairwise and elementwise."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from piq.functional import haar_filter, rgb2yiq

from audit.core.pairwise import Workspace, compiled_combination

HAAR_SCALES, HAAR_C, HAAR_ALPHA = 3, 30.0, 4.2


@dataclass(frozen=True)
class HaarFeatures:
    magnitudes: torch.Tensor  # (N, F, positions): |Haar coefficients| (6), then |I|, |Q| if RGB

    def __len__(self) -> int:
        return len(self.magnitudes)

    def take(self, start: int, stop: int) -> HaarFeatures:
        """The images start..stop-1 of this set, for one block.

        Args:
            start: first image position, >= 0.
            stop: one past the last image position (clipped to len(self) as a slice is).

        Returns:
            Their magnitudes, (n, F, P) with n = stop - start at most.
        """
        return HaarFeatures(self.magnitudes[start:stop])

    def padded(self, n: int) -> HaarFeatures:
        """Repeat the first image up to n (fixed block shapes: one compilation per run).

        Args:
            n: the block size to reach, in images.

        Returns:
            Features of max(n, len(self)) images (self itself when it already holds n or more).
        """
        extra = n - len(self)
        if extra <= 0:
            return self
        m = self.magnitudes
        return HaarFeatures(torch.cat([m, m[:1].expand(extra, -1, -1)]))


def haarpsi_features(x: torch.Tensor) -> HaarFeatures:
    """piq's steps up to the coefficient magnitudes, for float NCHW images in [0, 1].

    Args:
        x: (N, C, H, W) float tensor, pixels in [0, 1], C = 1 (grey) or 3 (RGB, taken to YIQ).

    Returns:
        Magnitudes (N, F, P) in 0-255 pixel units: the 6 Haar coefficients of Y (3 scales,
        2 directions), then |I| and |Q| for RGB (F = 8), at the P positions of piq's 2x
        downsampled image.

    Raises:
        ValueError: the images are smaller than 16 px on a side.
    """
    kernel_size = 2 ** (HAAR_SCALES + 1)
    if min(x.shape[-2:]) < kernel_size:
        raise ValueError(
            f"HaarPSI needs images of at least {kernel_size} px, got {tuple(x.shape[-2:])}"
        )
    x = x * 255
    rgb = x.shape[1] == 3
    yiq = rgb2yiq(x) if rgb else x
    down = max(yiq.shape[2] % 2, yiq.shape[3] % 2)
    yiq = F.avg_pool2d(F.pad(yiq, [0, down, 0, down]), kernel_size=2, stride=2, padding=0)
    coefficients = []
    for scale in range(HAAR_SCALES):
        size = 2 ** (scale + 1)
        h = haar_filter(size, dtype=x.dtype, device=x.device)
        kernels = torch.stack([h, h.transpose(-1, -2)])
        pad = [size // 2 - 1, size // 2, size // 2 - 1, size // 2]
        coefficients.append(F.conv2d(F.pad(yiq[:, :1], pad=pad, mode="constant"), kernels))
    magnitudes = [torch.cat(coefficients, dim=1).abs()]
    if rgb:
        padded = F.pad(yiq, pad=[0, 1, 0, 1])
        magnitudes.append(F.avg_pool2d(padded[:, 1:], kernel_size=2, stride=1, padding=0).abs())
    return HaarFeatures(torch.cat(magnitudes, dim=1).flatten(2))


def _similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (2.0 * a * b + HAAR_C) / (a * a + b * b + HAAR_C)


def haarpsi_combine(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """q: (nq, 1, F, P), r: (1, nr, F, P) -> (nq, nr).

    Args:
        q: (nq, 1, F, P) float query magnitudes (HaarFeatures.magnitudes[:, None]).
        r: (1, nr, F, P) float reference magnitudes, same F (6 grey, 8 RGB) and P; any shapes
            that broadcast against q's (e.g. (n, 1, F, P) for n paired images).

    Returns:
        (nq, nr) HaarPSI in q's dtype, in [0, 1]; 1 for a pair with no Haar structure at all.
    """
    w0 = torch.maximum(q[:, :, 4], r[:, :, 4])
    w1 = torch.maximum(q[:, :, 5], r[:, :, 5])
    sim0 = (_similarity(q[:, :, 0], r[:, :, 0]) + _similarity(q[:, :, 2], r[:, :, 2])) / 2
    sim1 = (_similarity(q[:, :, 1], r[:, :, 1]) + _similarity(q[:, :, 3], r[:, :, 3])) / 2
    num = (torch.sigmoid(sim0 * HAAR_ALPHA) * w0 + torch.sigmoid(sim1 * HAAR_ALPHA) * w1).sum(-1)
    den = (w0 + w1).sum(-1)
    if q.shape[2] == 8:  # RGB: the I/Q channel, weighted by the mean of the two weights
        w2 = (w0 + w1) / 2
        sim2 = (_similarity(q[:, :, 6], r[:, :, 6]) + _similarity(q[:, :, 7], r[:, :, 7])) / 2
        num = num + (torch.sigmoid(sim2 * HAAR_ALPHA) * w2).sum(-1)
        den = den + w2.sum(-1)
    eps = torch.finfo(q.dtype).eps
    score = (num + eps) / (den + eps)
    value = (torch.log(score / (1 - score)) / HAAR_ALPHA) ** 2
    # piq divides eps by eps when neither image has any Haar structure (two black images: every
    # weight is 0) and returns inf; such a pair is identical in every coefficient, so it scores
    # HaarPSI's maximum, 1
    return torch.where(den > 0, value, torch.ones_like(value))


def haarpsi_bytes_per_pair(features: HaarFeatures, *, compiled: bool) -> int:
    """Peak bytes one pair costs in haarpsi_pairwise: eager temporaries of position maps; fused,
    little more than the result.

    Args:
        features: features of the images to be searched (only the position count P is read).
        compiled: the fused path's cost; False: the eager path's.

    Returns:
        Bytes per (query, reference) pair, counting 4-byte (float32) values.
    """
    return features.magnitudes.shape[-1] * 4 * (2 if compiled else 16)


def haarpsi_pairwise(
    q: HaarFeatures, r: HaarFeatures, *, compiled: bool = False, workspace: Workspace | None = None
) -> torch.Tensor:
    """HaarPSI of every (query, reference) pair: (len(q), len(r)). `workspace` is accepted for
    the engines' common signature; the fused combination needs no large buffers.

    Args:
        q: the query block's features (haarpsi_features).
        r: the reference block's features, same F and P as q.
        compiled: combine with the torch.compile'd haarpsi_combine; False: eagerly.
        workspace: unused (None or not).

    Returns:
        (len(q), len(r)) tensor in the features' dtype: HaarPSI of each pair, in [0, 1].
    """
    combine = compiled_combination(haarpsi_combine) if compiled else haarpsi_combine
    return combine(q.magnitudes[:, None], r.magnitudes[None])
