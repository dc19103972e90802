"""Model inversion: reconstruct class-representative images from a classifier alone.

Two variants per class, both optimising the input by gradient steps with valid pixels enforced:

* ``priors`` (DeepInversion-style): cross-entropy to the class from Gaussian noise, with a
  total-variation and an L2 image prior, random jitter each step, and, where the model has BN
  layers, the BN prior (the batch statistics of the reconstructions matched to the running ones);
* ``miface`` (Fredrikson et al. 2015, the prior-free baseline): minimise 1 - softmax of the class
  from a blank (mid-grey) image, nothing else.

A reconstruction leaks when it is closer to the private members of its class than to non-members
of the same class: `score_reconstructions` measures both (nearest-neighbour SSIM/HaarPSI against
equally many members and non-members per class, so the maxima are comparable).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from audit.core.bn import bn_inputs, frozen, group_losses
from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier, bn_layers, quantise
from audit.core.sections import BNMatchConfig, InversionConfig
from audit.core.seeding import numpy_rng, torch_generator
from audit.core.similarity import nearest_neighbours

Variant = Literal["priors", "miface"]
VARIANTS: tuple[Variant, ...] = ("priors", "miface")
_BN_TERM_ONLY = BNMatchConfig(ce_weight=0.0)  # the paper's BN statistics term, nothing else


@dataclass(frozen=True)
class Reconstructions:
    images: np.ndarray  # uint8 NHWC, as an attacker would look at them
    labels: np.ndarray  # the class each was inverted for


def _total_variation(z: torch.Tensor) -> torch.Tensor:
    return (z[:, :, 1:, :] - z[:, :, :-1, :]).abs().mean() + (
        z[:, :, :, 1:] - z[:, :, :, :-1]
    ).abs().mean()


def invert(
    model: NormalizedClassifier,
    *,
    num_classes: int,
    channels: int,
    image_size: int,
    cfg: InversionConfig,
    variant: Variant,
    seed: int,
    stream: str,
    device: str,
) -> Reconstructions:
    """cfg.per_class reconstructions of every class, optimised for cfg.steps Adam steps.

    Args:
        model: the attacked classifier (input (N, C, H, W) in [0, 1], normalised inside); moved
            to device, frozen while optimising and restored afterwards.
        num_classes: the classes to invert, >= 1 (labels 0 .. num_classes - 1).
        channels: image channels, 1 or 3.
        image_size: image side in pixels (square images).
        cfg: the `inversion` section (steps, per_class, lr, prior weights, jitter in px).
        variant: "priors" (DeepInversion-style, from Gaussian noise) or "miface" (from mid-grey,
            no prior).
        seed: the run's seed; with stream, seeds the starting noise and the jitter.
        stream: the random-stream name that keeps this call's draws apart from others'.
        device: torch device to optimise on ("cpu", "cuda"...).

    Returns:
        images: (num_classes * cfg.per_class, image_size, image_size, channels) uint8, pixels
        in [0, 255]; labels: (same n,) int64, each class cfg.per_class times in a row.

    Raises:
        ValueError: variant is not one of VARIANTS.
        AuditError: the optimised images hold NaN or inf.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown inversion variant {variant!r}")
    labels = np.repeat(np.arange(num_classes), cfg.per_class).astype(np.int64)
    y = torch.from_numpy(labels).to(device)
    shape = (len(labels), channels, image_size, image_size)
    model = model.to(device)
    lo = model.normalize(torch.zeros(1, channels, 1, 1, device=device))
    hi = model.normalize(torch.ones(1, channels, 1, 1, device=device))
    if variant == "miface":
        z = model.normalize(torch.full(shape, 0.5, device=device))
    else:
        noise_rng = torch_generator(seed, stream, "noise", device=device)
        z = torch.randn(shape, generator=noise_rng, device=device)
    z = z.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=cfg.lr)
    jitter_rng = numpy_rng(seed, stream, "jitter")
    use_bn = variant == "priors" and cfg.bn_weight > 0 and bool(bn_layers(model))
    averaging = torch.full((1, len(labels)), 1.0 / len(labels), device=device)
    with frozen(model), contextlib.ExitStack() as stack:
        records = stack.enter_context(bn_inputs(model)) if use_bn else []
        for _step in range(cfg.steps):
            x = z
            if variant == "priors" and cfg.jitter > 0:
                dy, dx = (int(v) for v in jitter_rng.integers(-cfg.jitter, cfg.jitter + 1, 2))
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if use_bn:
                records.clear()
            logits = model.net(x)
            if variant == "miface":
                loss = (1 - logits.softmax(dim=1).gather(1, y[:, None])).mean()
            else:
                loss = F.cross_entropy(logits, y)
                loss = loss + cfg.tv_weight * _total_variation(x)
                loss = loss + cfg.l2_weight * (x * x).mean()
                if use_bn:
                    bn = group_losses(records, logits, y, x, averaging, _BN_TERM_ONLY)[0]
                    loss = loss + cfg.bn_weight * bn
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, hi), lo))  # valid pixels only
    if not torch.isfinite(z).all():
        raise AuditError(f"model inversion ({variant}) produced NaN or inf; lower its lr")
    return Reconstructions(quantise(model, z), labels)


def score_reconstructions(
    reconstructions: Reconstructions,
    members: np.ndarray,
    member_labels: np.ndarray,
    nonmembers: np.ndarray,
    nonmember_labels: np.ndarray,
    *,
    rng: np.random.Generator,
    device: str,
) -> dict[str, np.ndarray]:
    """Per reconstruction: the highest SSIM and HaarPSI to members of its class and to
    non-members of its class, each side subsampled to the same size per class.

    Args:
        reconstructions: what `invert` returned (uint8 NHWC images and their classes).
        members: (M, H, W, C) uint8 private training images, pixels in [0, 255], the
            reconstructions' shape.
        member_labels: (M,) int, the members' classes.
        nonmembers: (M', H, W, C) uint8 images of the same distribution not trained on.
        nonmember_labels: (M',) int, their classes.
        rng: seeded numpy Generator that draws the equal-size subsamples per class.
        device: torch device for the similarity computation.

    Returns:
        Keys "ssim_member", "ssim_nonmember", "haarpsi_member", "haarpsi_nonmember", each
        (n_reconstructions,) float64 (higher = more similar; SSIM <= 1, HaarPSI in [0, 1]),
        NaN where the class has no member or no non-member.
    """
    n = len(reconstructions.labels)
    out = {
        f"{metric}_{side}": np.full(n, np.nan)
        for metric in ("ssim", "haarpsi")
        for side in ("member", "nonmember")
    }
    for c in np.unique(reconstructions.labels):
        mine = reconstructions.labels == c
        pool_m, pool_n = np.flatnonzero(member_labels == c), np.flatnonzero(nonmember_labels == c)
        size = min(len(pool_m), len(pool_n))
        if size == 0:
            continue
        sides = {
            "member": members[np.sort(rng.choice(pool_m, size, replace=False))],
            "nonmember": nonmembers[np.sort(rng.choice(pool_n, size, replace=False))],
        }
        for metric in ("ssim", "haarpsi"):
            for side, reference in sides.items():
                values, _ = nearest_neighbours(
                    reconstructions.images[mine], reference, metric, device=device, progress=False
                )
                out[f"{metric}_{side}"][mine] = values[:, 0]
    return out
