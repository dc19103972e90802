"""How many BN-matching groups fit one forward pass: the activation memory a synthetic image
costs in the teacher, against a budget."""

from __future__ import annotations

import logging

import torch

from audit.core.bn import (
    frozen,
)
from audit.core.models import NormalizedClassifier

log = logging.getLogger(__name__)


def activation_bytes_per_image(
    teacher: NormalizedClassifier, image_shape: tuple[int, int, int], *, device: str
) -> int:
    """Bytes autograd keeps per image for the backward pass through the teacher to its input,
    measured on a forward pass of two images (saved_tensors_hooks sees every saved tensor).

    Args:
        teacher: the classifier the images are optimised through; moved to device.
        image_shape: (C, H, W) of one image.
        device: torch device the optimisation runs on.

    Returns:
        Bytes per image, >= 1.
    """
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    z = torch.zeros((2, *image_shape), device=device, requires_grad=True)
    with frozen(teacher.to(device)), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        teacher.net(z).sum()
    return max(1, saved // 2)


def groups_within_budget(
    teacher: NormalizedClassifier,
    image_shape: tuple[int, int, int],
    group_size: int,
    budget: int,
    *,
    device: str,
) -> int:
    """How many groups one pass may optimise: the saved activations, twice over for the
    backward's temporaries, within budget bytes (at least one group).

    Args:
        teacher: the classifier the images are optimised through; moved to device.
        image_shape: (C, H, W) of one image.
        group_size: images per group, >= 1.
        budget: activation memory one pass may hold, in bytes.
        device: torch device the optimisation runs on.

    Returns:
        Groups per pass, >= 1.
    """
    per_image = activation_bytes_per_image(teacher, image_shape, device=device)
    return max(1, budget // (2 * per_image * group_size))
