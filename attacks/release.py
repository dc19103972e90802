"""Membership inference against the release itself (GAN-Leaks full black-box, Chen et al. 2020).

A candidate record scores high when some released image is close to it: nearest-neighbour
similarity (SSIM, HaarPSI), negative nearest distance in pixels (L2) and in the penultimate
feature space of a classifier the attacker could hold (one trained on population records, never
the private target: an overfit target separates members from non-members in its own features
whatever was released). Members the generator memorised score higher than non-members. The
calibrated variants (attacks/tasks/mia_release.py) subtract the same score against reference
pipelines' sets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audit.core.models import NormalizedClassifier
from audit.core.neighbours import SHORTLIST, l2_shortlist, transformed_neighbours
from audit.core.training import to_tensor
from audit.core.transforms import IDENTITY, Transform

DISTANCES = ("pixel_l2", "ssim", "haarpsi", "feature_l2")


@torch.no_grad()
def penultimate_features(
    model: NormalizedClassifier, images: np.ndarray, *, device: str, batch_size: int = 500
) -> torch.Tensor:
    """The input of the model's last Linear layer (the representation a classifier head sees).

    Args:
        model: the attacker's classifier, taking images in [0, 1]; left in eval mode on device.
        images: (N, H, W, C) uint8 images, pixels in [0, 255].
        device: where the model runs (a torch device name, e.g. "cpu" or "cuda").
        batch_size: images per forward pass (a count >= 1).

    Returns:
        (N, D) float32 CPU tensor, D the last Linear layer's input size.

    Raises:
        ValueError: the model has no Linear layer.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear head to take features from")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(
        lambda _m, inputs: captured.append(inputs[0].detach().flatten(1).float().cpu())
    )
    try:
        model.eval().to(device)
        for start in range(0, len(images), batch_size):
            model(to_tensor(images[start : start + batch_size], device))
    finally:
        handle.remove()
    return torch.cat(captured)


def nearest_l2(query: torch.Tensor, reference: torch.Tensor, block: int = 1024) -> np.ndarray:
    """min_j ||q_i - r_j||_2 for flattened vectors, in blocks.

    Args:
        query: (n_q, D) float CPU tensor.
        reference: (n_r, D) float CPU tensor, n_r >= 1.
        block: query rows per distance computation (a count >= 1).

    Returns:
        (n_q,) float numpy array, each query's Euclidean distance to its nearest reference (>= 0).
    """
    out = []
    for start in range(0, len(query), block):
        out.append(torch.cdist(query[start : start + block], reference).min(dim=1).values)
    return torch.cat(out).numpy()


def release_scores(
    candidates: np.ndarray,
    synthetic: np.ndarray,
    *,
    candidate_features: torch.Tensor,
    synthetic_features: torch.Tensor,
    device: str,
    transforms: tuple[Transform, ...] = (IDENTITY,),
) -> dict[str, np.ndarray]:
    """Membership score of each candidate under each distance (higher = more likely a member).
    The pixel distances take the best of the transformations (a released image may be a
    mirrored or shifted copy of the candidate; audit/core/neighbours.py); feature distances do not
    need them.

    Args:
        candidates: (n, H, W, C) uint8 candidate records, pixels in [0, 255].
        synthetic: (s, H, W, C) uint8 released images, s >= 1.
        candidate_features: (n, D) float CPU tensor, the candidates' penultimate features.
        synthetic_features: (s, D) float CPU tensor, the released images'.
        device: where the pixel searches run (a torch device name).
        transforms: the transformations tried on the pixel distances, the identity first.

    Returns:
        Score name (DISTANCES: pixel_l2, ssim, haarpsi, feature_l2) -> (n,) array, higher =
        member: pixel_l2 is minus the L2 distance of images in [0, 1], feature_l2 minus the
        feature distance, ssim and haarpsi the best similarity (at most 1).
    """
    # one shortlist serves all three pixel scores: its top-1 is the exact transformed L2
    short = l2_shortlist(candidates, synthetic, transforms, SHORTLIST, device=device)
    scores = {
        "pixel_l2": short.values[:, 0],
        "feature_l2": -nearest_l2(candidate_features, synthetic_features),
    }
    for metric in ("ssim", "haarpsi"):
        found = transformed_neighbours(
            candidates,
            synthetic,
            metric,
            transforms=transforms,
            device=device,
            candidates=short if len(transforms) > 1 else None,
        )
        scores[metric] = found.values[:, 0]
    return {name: scores[name] for name in DISTANCES}
