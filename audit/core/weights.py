"""Loading a weights file into a classifier: the formats accepted, `weights_only` loading, and
one-line errors for files that do not fit."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from audit.core.errors import AuditError
from audit.core.models import (
    PYTORCHCV_CIFAR_MEAN,
    PYTORCHCV_CIFAR_STD,
    NormalizedClassifier,
    is_user_model,
)

log = logging.getLogger(__name__)


def _summarise_mismatch(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
    return detail[:300]


def weights_format(path: str) -> str:
    """ "suite" for a file this suite saved (normalisation included), "pytorchcv" for a bare
    state dict such as pytorchcv's published checkpoints (read with weights_only=True).

    Args:
        path: the weights file.

    Returns:
        "suite" when the file is a dict holding "mean" and "std", else "pytorchcv".
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    return (
        "suite" if isinstance(state, dict) and "mean" in state and "std" in state else "pytorchcv"
    )


def load_weights(
    model: NormalizedClassifier, path: str, *, model_name: str, flag: str = "--weights"
) -> None:
    """Load a file saved by this suite (normalisation included) or a bare pytorchcv state dict
    (e.g. a ~/.torch/models cache file), which gets pytorchcv's CIFAR normalisation.

    A bare state dict for a user model (module:function) keeps the default normalisation (mean
    0.5, std 0.25); for a pytorchcv model with other than 3 channels the CIFAR mean and std are
    averaged over the channels. Loading is strict.

    Args:
        model: the classifier to load into, modified in place.
        path: the weights file.
        model_name: the --model value, named in messages and telling user models apart.
        flag: the command-line flag that gave the file, named in messages.

    Raises:
        AuditError: the file does not exist, cannot be read, is not a dict of tensors, does not
            fit the model, or the loaded state holds NaN or infinite values.
    """
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"{flag} file {path} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"{flag} file {path} is not a readable weights file: {first}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AuditError(f"{flag} file {path} does not hold a state dict of tensors")
    suite_format = "mean" in state and "std" in state
    target: nn.Module = model if suite_format else model.net
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AuditError(
            f"{flag} {path} do not fit {model_name} with {model.mean.shape[1]} channel(s) and "
            f"{_num_outputs(model)} classes: {_summarise_mismatch(exc)}"
        ) from exc
    if not suite_format and is_user_model(model_name):
        log.info("%s is a bare state dict: inputs normalised with mean 0.5, std 0.25", path)
    elif not suite_format:
        channels = model.mean.shape[1]
        mean = torch.tensor(PYTORCHCV_CIFAR_MEAN)
        std = torch.tensor(PYTORCHCV_CIFAR_STD)
        if channels != 3:
            mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
        model.set_normalization(mean, std)
        log.info("%s is a bare state dict: using pytorchcv's CIFAR-10 normalisation", path)
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise AuditError(f"--weights {path} hold NaN or infinite values in {', '.join(bad[:3])}")


def _num_outputs(model: NormalizedClassifier) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[-1].out_features)
    return -1
