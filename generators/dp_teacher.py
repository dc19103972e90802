"""The DP teacher of bn_match_dp (generators/bn_match_dp.py): the run's architecture made
trainable with DP-SGD. BatchNorm mixes the records of a batch, so no per-record gradient exists;
GroupNorm normalises each record by itself. Its statistics are released separately
(generators/dp_statistics.py)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from opacus.validators import ModuleValidator
from torch import nn

from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier, bn_layers, build_model


def dp_teacher(model: NormalizedClassifier) -> NormalizedClassifier:
    """A copy of the model that DP-SGD can train: BatchNorm replaced by GroupNorm (Opacus's
    rule: min(32, C) groups), in-place activations made out-of-place (Opacus's backward hooks
    cannot follow an in-place ReLU), the public default normalisation kept.

    Args:
        model: a freshly initialised classifier of the run's architecture, with BatchNorm.

    Returns:
        A new classifier; model is not changed.

    Raises:
        AuditError: the model has no BatchNorm layer (nothing to release statistics of).
    """
    if not bn_layers(model):
        raise AuditError(
            "the model has no BatchNorm layers; bn_match_dp needs them (their statistics are "
            "what it matches)"
        )
    teacher = copy.deepcopy(model)
    teacher.net = ModuleValidator.fix(teacher.net)
    for module in teacher.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            setattr(module, "inplace", False)  # noqa: B010  # nn.Module types attributes loosely
    return teacher


def cross_entropy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, _generator: torch.Generator
) -> torch.Tensor:
    """The teacher's per-record loss in the form train_dp_sgd calls.

    Args:
        model: the classifier (a NormalizedClassifier: images in [0, 1]).
        x: (N, C, H, W) float images, pixels in [0, 1].
        y: (N,) int64 labels.
        _generator: unused (the loss draws nothing).

    Returns:
        (N,) float cross-entropy of each record.
    """
    return F.cross_entropy(model(x), y, reduction="none")


def check_model(config: RunConfig, channels: int, image_size: int) -> None:
    """The input check, before anything is written: the run's architecture has BatchNorm layers
    (the ones the DP teacher turns into GroupNorm and releases statistics of).

    Args:
        config: the run's config (its model and seed).
        channels: the private images' channels.
        image_size: the private images' side in pixels.

    Raises:
        AuditError: the model cannot be built, or has no BatchNorm layer.
    """
    model = build_model(
        config.model, channels=channels, num_classes=2, seed=config.seed, image_size=image_size
    )
    dp_teacher(model)
