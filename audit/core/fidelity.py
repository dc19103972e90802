"""Fidelity beside utility: Fréchet distances between released and held-out images.

fd_eval: the Fréchet distance between the Gaussians fitted to the penultimate features of the
population model (the evaluation classifier trained on the test split, which no audited pipeline
sees) for a release and for the holdout non-members. The `real` row scores as many held-out
images (the real row's release, disjoint from the holdout) as a release has: Fréchet distances
shrink as the sample grows, so the baseline must use the same n to be the yardstick.

fid_inception: the same distance in Inception-v3 pool features (2,048-d), only when
--inception-weights points at a local state dict of torchvision's `inception_v3` (no download).
The figure equals the published FID protocol's only with the weights that protocol uses in this
architecture; pytorch-fid's TF-ported network differs slightly from torchvision's.
"""

from __future__ import annotations

import logging
import pickle
from zipfile import BadZipFile

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from audit.core.errors import AuditError
from audit.core.training import to_tensor

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of the Gaussians fitted to two
    feature sets (rows = images); the imaginary part numerical error leaves is dropped.

    Args:
        a: (n_a, D) features of one image set, one row per image (cast to float64).
        b: (n_b, D) features of the other set, same D.

    Returns:
        The Fréchet distance, >= 0 (clipped at 0), in squared feature units.

    Raises:
        AuditError: either set has fewer than 2 images.
    """
    if len(a) < 2 or len(b) < 2:
        raise AuditError("a Fréchet distance needs at least 2 images on each side")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: regularise as pytorch-fid does
        eps = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    return max(value, 0.0)


def load_inception(path: str, device: str) -> torch.nn.Module:
    """torchvision's Inception-v3 with the state dict at `path` (weights_only), its classifier
    replaced by the identity so it returns the 2,048 pool features.

    Args:
        path: the state dict file (RunConfig.inception_weights, --inception-weights).
        device: where the model runs ("cpu", "cuda").

    Returns:
        The model in eval mode on `device`, mapping (N, 3, 299, 299) normalised images to
        (N, 2048) features.

    Raises:
        AuditError: the file is not a readable weights file, or its state dict does not fit
            torchvision's inception_v3.
    """
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, BadZipFile) as exc:
        first = str(exc).splitlines()[0]
        raise AuditError(
            f"--inception-weights {path}: not a readable weights file: {first}"
        ) from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0]
        raise AuditError(
            f"--inception-weights {path} does not fit torchvision's inception_v3: {first}"
        ) from exc
    model.fc = torch.nn.Identity()
    return model.eval().to(device)


@torch.no_grad()
def inception_features(
    model: torch.nn.Module, images: np.ndarray, *, device: str, batch_size: int = 50
) -> np.ndarray:
    """Pool features of uint8 NHWC images, resized to 299 px (grey repeated to RGB).

    Args:
        model: the network from load_inception, on `device`.
        images: (N, H, W, C) uint8, pixels in [0, 255], C = 1 or 3; N >= 1.
        device: where the batches run ("cpu", "cuda").
        batch_size: images per forward pass, >= 1.

    Returns:
        (N, 2048) float32 features, one row per image.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size], device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear")
        out.append(model((x - mean) / std).cpu().numpy())
    return np.concatenate(out)
