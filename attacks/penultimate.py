"""A classifier split into its feature map (input -> penultimate features) and its linear head,
and the orthonormal 2-D DCT the HCR bounds are expressed in. Batched feature extraction without
gradients is attacks.release.penultimate_features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft
import torch
from torch import nn

from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier

FeatureMap = Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW -> (N, D)


def split_classifier(model: NormalizedClassifier) -> tuple[FeatureMap, nn.Linear]:
    """The feature map (normalised NCHW -> penultimate features) and the Linear head. pytorchcv
    CIFAR nets are `features` (ending in the global pool) then a Linear `output`; any other
    model (--model module:function) is split at its last Linear layer, the feature map running
    the net up to that layer's input (the head's own computation is discarded). The feature map
    takes *normalised* input, so perturbations live in the model's input space.

    Args:
        model: the classifier (takes (N, C, H, W) float images in [0, 1] and normalises them
            itself); its `net` is what is split.

    Returns:
        The feature map, normalised (N, C, H, W) float -> (N, D) float penultimate features
        (gradients flow through it), and the Linear head, (N, D) -> (N, classes) logits.

    Raises:
        AuditError: the net has neither the `features`/`output` layout nor any Linear layer.
    """
    features, output = getattr(model.net, "features", None), getattr(model.net, "output", None)
    if isinstance(features, nn.Module) and isinstance(output, nn.Linear):

        def feature_map(z: torch.Tensor) -> torch.Tensor:
            return features(z).flatten(1)

        return feature_map, output
    linears = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AuditError("feature attacks need a model whose last layer is Linear")
    head = linears[-1]

    def head_input(z: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
        try:
            model.net(z)
        finally:
            handle.remove()
        return captured[-1].flatten(1)

    return head_input, head


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): coefficients = D @ x @ D.T for an n x n image.

    Args:
        n: the image side in pixels, >= 1.

    Returns:
        (n, n) float32 on the CPU, orthonormal (D @ D.T = I); row k is the k-th cosine basis.
    """
    return torch.from_numpy(scipy.fft.dct(np.eye(n), norm="ortho", axis=0)).float()


def to_dct(x: torch.Tensor) -> torch.Tensor:
    """Per-channel orthonormal 2-D DCT of (..., H, W) with H == W; norms are preserved.

    Args:
        x: (..., H, W) float tensor with H == W (e.g. (N, C, H, W) normalised images), any
            device.

    Returns:
        The DCT coefficients, same shape, dtype and device as x; each (H, W) slice keeps its
        L2 norm.
    """
    d = dct_matrix(x.shape[-1]).to(x.device, x.dtype)
    return d @ x @ d.T
