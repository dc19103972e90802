"""The BN-statistics loss: what BN matching minimises, inversion's BN prior reuses, and the
released images' `bn_stat_distance` measures (generators/bn_match.py says which variant is the
paper's)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier, bn_layers
from audit.core.sections import BNMatchConfig


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BN normalises with running statistics and never updates them) and no parameter
    gradients; the previous mode and flags are restored afterwards.

    Args:
        model: the module to freeze for the duration of the block.

    Yields:
        The same model, in eval mode with requires_grad False on every parameter.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


# per normalisation layer, the (C,) mean and variance its inputs are matched to
Targets = Mapping[nn.Module, tuple[torch.Tensor, torch.Tensor]]
Records = list[tuple[nn.Module, torch.Tensor]]


@contextlib.contextmanager
def bn_inputs(model: nn.Module, layers: Sequence[nn.Module] | None = None) -> Iterator[Records]:
    """Record each BN layer's input during a forward pass. Inputs, not outputs: pytorchcv's
    ReLU(inplace=True) right after BN would overwrite a recorded output.

    The hooks are removed when the block ends; the list keeps growing with every forward pass
    run inside it.

    Args:
        model: the network whose BatchNorm layers are hooked.
        layers: hook these layers of model instead (e.g. the GroupNorm layers of a DP teacher,
            matched to released statistics); None: every BatchNorm layer.

    Yields:
        The list that forward passes fill: one (layer, its input tensor, (N, C, H, W)) pair
        per layer call, in call order.

    Raises:
        AuditError: the model has no BatchNorm layer (and no layers were given).
    """
    if layers is None:
        layers = bn_layers(model)
    if not layers:
        raise AuditError("the teacher has no BatchNorm layers; BN-statistics matching needs them")
    records: Records = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        records.append((module, inputs[0]))

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def group_matrix(group_index: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(G, N) averaging matrix: row g holds 1/n_g at the images of group g.

    Args:
        group_index: (N,) int64, each image's group in [0, n_groups); every group needs at
            least one image (an empty group's row would be NaN).
        n_groups: G, the number of groups, >= 1.

    Returns:
        (G, N) float32 on group_index's device; each row sums to 1.
    """
    onehot = F.one_hot(group_index, n_groups).T.to(torch.float32)
    return onehot / onehot.sum(dim=1, keepdim=True)


def _norm(diff: torch.Tensor, cfg: BNMatchConfig) -> torch.Tensor:
    return (
        (diff * diff).sum(-1) if cfg.norm == "squared" else torch.linalg.vector_norm(diff, dim=-1)
    )


def _spread(var: torch.Tensor, eps: float, cfg: BNMatchConfig) -> torch.Tensor:
    return torch.sqrt(var + eps) if cfg.spread == "std" else var


def group_losses(
    records: Records,
    logits: torch.Tensor,
    labels: torch.Tensor,
    z: torch.Tensor,
    averaging: torch.Tensor,
    cfg: BNMatchConfig,
    targets: Targets | None = None,
) -> torch.Tensor:
    """The loss of each group, shape (G,). Only images of group g contribute to entry g.

    Per BN layer: the distance between the group's (cfg.statistics "batch") or each image's
    ("image", then averaged) mean and spread and the layer's running statistics (or the
    layer's entry in targets); plus
    cfg.ce_weight x the group's mean cross-entropy and cfg.tv_weight x its mean total variation.

    Args:
        records: (BN layer, its input (N, C_l, H_l, W_l)) pairs from `bn_inputs` for the
            forward pass of these N images; layers need running statistics.
        logits: (N, num_classes) logits of the same pass.
        labels: (N,) int64 class each image is pushed towards (cross-entropy term).
        z: (N, C, H, W) float normalised images (total-variation term).
        averaging: (G, N) float32 from `group_matrix`.
        cfg: the bn section: statistics, spread, norm, ce_weight and tv_weight.
        targets: each recorded layer's (C,) target mean and variance; None: the layers'
            running statistics.

    Returns:
        (G,) float32 loss per group, >= 0, on z's device (differentiable in z).
    """
    total = torch.zeros(averaging.shape[0], device=z.device, dtype=torch.float32)
    group_of_image = averaging.argmax(dim=0)
    for layer, act in records:
        act = act.float()
        eps = float(getattr(layer, "eps"))  # noqa: B009  # BatchNorm's and GroupNorm's own
        target_mean, target_var = _target(layer, targets)
        target_spread = _spread(target_var, eps, cfg)
        image_mean = act.mean(dim=(2, 3))  # (N, C)
        if cfg.statistics == "batch":
            mean = averaging @ image_mean  # (G, C) = mean over the group's images, H and W
            centred = act - mean[group_of_image][:, :, None, None]
            var = averaging @ (centred * centred).mean(dim=(2, 3))  # biased, as BN's batch var
            total = total + _norm(mean - target_mean, cfg)
            total = total + _norm(_spread(var, eps, cfg) - target_spread, cfg)
        else:  # per-image statistics over (H, W), averaged within the group (ZeroQ)
            var = act.var(dim=(2, 3), unbiased=False)
            per_image = _norm(image_mean - target_mean, cfg)
            per_image = per_image + _norm(_spread(var, eps, cfg) - target_spread, cfg)
            total = total + averaging @ per_image
    if cfg.ce_weight:
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        total = total + cfg.ce_weight * (averaging @ ce)
    if cfg.tv_weight:
        tv = (z[:, :, 1:, :] - z[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
        tv = tv + (z[:, :, :, 1:] - z[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
        total = total + cfg.tv_weight * (averaging @ tv)
    return total


def _target(layer: nn.Module, targets: Targets | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, variance) a layer's input is matched to, float32."""
    if targets is not None:
        mean, var = targets[layer]
        return mean.float(), var.float()
    assert isinstance(layer, nn.modules.batchnorm._BatchNorm)
    assert layer.running_mean is not None and layer.running_var is not None
    return layer.running_mean.float(), layer.running_var.float()


DISTANCE_IMAGES_PER_PASS = 1000  # whole groups, at most this many images per forward pass


@torch.no_grad()
def bn_statistics_distance(
    teacher: NormalizedClassifier,
    images: np.ndarray,
    *,
    group_size: int,
    device: str,
    images_per_pass: int = DISTANCE_IMAGES_PER_PASS,
    targets: Targets | None = None,
) -> float:
    """Mean over groups of sum_l ||mu_l - mu||_2 + ||var_l - var||_2 for released uint8 images:
    how closely what leaves the building matches the private model's statistics. Whole groups
    go through the teacher a few at a time (at least one group per pass): every BN input of
    10,000 CIFAR images at once would hold about 8 GB.

    Consecutive images form the groups; a last, smaller group counts as much as a full one.

    Args:
        teacher: the private classifier whose BN running statistics are the target (moved to
            device, frozen during the passes).
        images: (N, H, W, C) uint8 released images, pixels in [0, 255], N >= 1.
        group_size: images per group, >= 1.
        device: where the forward passes run.
        images_per_pass: at most this many images per forward pass (whole groups, >= 1 group).
        targets: the statistics to measure against, per hooked layer (e.g. a DP teacher's
            released ones); None: the teacher's BN running statistics.

    Returns:
        The mean per-group distance, a float >= 0 (lower = closer to the private statistics).

    Raises:
        AuditError: the teacher has no BatchNorm layer.
    """
    from audit.core.training import to_tensor

    cfg = BNMatchConfig(group_size=group_size, ce_weight=0.0)
    n = len(images)
    groups_per_pass = max(1, images_per_pass // group_size)
    losses = []
    with frozen(teacher.to(device)):
        for start in range(0, n, groups_per_pass * group_size):
            chunk = images[start : start + groups_per_pass * group_size]
            m = len(chunk)
            group_index = torch.arange(m, device=device) // group_size
            averaging = group_matrix(group_index, math.ceil(m / group_size))
            layers = None if targets is None else list(targets)
            with bn_inputs(teacher.net, layers) as records:
                z = teacher.normalize(to_tensor(chunk, device))
                logits = teacher.net(z)
                labels = torch.zeros(m, dtype=torch.long, device=device)
                loss = group_losses(records, logits, labels, z, averaging, cfg, targets)
                losses.append(loss.cpu())
    return float(torch.cat(losses).mean())
