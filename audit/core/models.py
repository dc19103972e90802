"""pytorchcv CIFAR classifiers adapted to the data, with their input normalisation stored inside."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.core.errors import AuditError
from audit.core.seeding import seeded_global_rng

log = logging.getLogger(__name__)

CIFAR_SUFFIXES = ("_cifar10", "_cifar100", "_svhn")
# pytorchcv's published CIFAR-10 weights expect this normalisation (docs/references.md)
PYTORCHCV_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
PYTORCHCV_CIFAR_STD = (0.2023, 0.1994, 0.2010)


class NormalizedClassifier(nn.Module):
    """Takes images in [0, 1] (NCHW) and normalises them with its own per-channel buffers, so the
    normalisation travels with the weights file."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.25))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        channels = self.mean.shape[1]
        self.mean.copy_(mean.reshape(1, channels, 1, 1))
        self.std.copy_(std.reshape(1, channels, 1, 1).clamp_min(1e-3))


def quantise(teacher: NormalizedClassifier, z: torch.Tensor) -> np.ndarray:
    """Normalised tensor -> uint8 NHWC: de-normalise, clamp to [0, 1], round to 1/255."""
    x = teacher.denormalize(z.detach()).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _adapt_final_pool(net: nn.Module) -> None:
    """pytorchcv CIFAR nets end in AvgPool2d(8), which needs 32x32 input; a global average pool is
    identical there and works at any size. It has no parameters, so weight files still load."""
    for name, module in list(net.named_modules()):
        if name.endswith("final_pool") and isinstance(module, nn.AvgPool2d):
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(parent, name.rsplit(".", 1)[-1], nn.AdaptiveAvgPool2d(1))


def is_user_model(name: str) -> bool:
    """--model module:function names the user's own code; anything else is a pytorchcv name."""
    return ":" in name


def user_model_builder(name: str) -> Callable[..., object]:
    """The function a `module:function` --model names, imported from the Python path (the
    current directory included); AuditError when it cannot be found."""
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise AuditError(f"--model {name!r}: expected module:function, e.g. mynets:small_bn_cnn")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise AuditError(
            f"--model {name!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    builder = getattr(module, function_name, None)
    if not callable(builder):
        raise AuditError(f"--model {name!r}: {module_name} has no function {function_name}")
    return builder


def build_user_model(name: str, *, channels: int, num_classes: int, image_size: int) -> nn.Module:
    """function(channels=, num_classes=, image_size=) from the user's module: any classifier of
    NCHW images (normalised by the suite) to logits, ending in a Linear layer."""
    builder = user_model_builder(name)
    try:
        net = builder(channels=channels, num_classes=num_classes, image_size=image_size)
    except Exception as exc:  # the user's code: report what it raised, in one line
        raise AuditError(
            f"--model {name!r} failed to build a {channels}-channel, {num_classes}-class model: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(net, nn.Module):
        raise AuditError(f"--model {name!r} returned {type(net).__name__}, not a torch nn.Module")
    if not any(isinstance(m, nn.Linear) for m in net.modules()):
        raise AuditError(
            f"--model {name!r} has no Linear layer; the attacks read the penultimate features "
            "as the input of the last Linear layer"
        )
    return net


def check_fits(
    model: nn.Module, name: str, *, channels: int, image_size: int, classes: int
) -> None:
    """One forward pass of two blank images: AuditError unless it gives (2, classes) logits."""
    probe = torch.zeros(2, channels, image_size, image_size)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(probe)
    except Exception as exc:  # shape errors surface as RuntimeError, the user's code as anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AuditError(
            f"--model {name!r} does not fit {channels}-channel {image_size}x{image_size} images: "
            f"{type(exc).__name__}: {first[:200]}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AuditError(
            f"--model {name!r} gives {shape} for 2 images; expected (2, {classes}) logits"
        )


def build_model(
    name: str,
    *,
    channels: int,
    num_classes: int,
    seed: int,
    stream: str = "model",
    image_size: int = 32,
) -> NormalizedClassifier:
    """A freshly initialised pytorchcv CIFAR model, or the user's (module:function); init drawn
    from a named stream of the seed."""
    if is_user_model(name):
        with seeded_global_rng(seed, stream):
            net = build_user_model(
                name, channels=channels, num_classes=num_classes, image_size=image_size
            )
        return NormalizedClassifier(net, channels)
    from pytorchcv.model_provider import get_model

    if not name.endswith(CIFAR_SUFFIXES):
        raise AuditError(
            f"--model {name!r} is not a pytorchcv CIFAR model (name ending in "
            f"{', '.join(CIFAR_SUFFIXES)}, e.g. resnet20_cifar10) nor module:function"
        )
    try:
        with seeded_global_rng(seed, stream):
            try:
                net = get_model(name, in_channels=channels, num_classes=num_classes)
            except AssertionError:
                # resnet*_cifar* only accept 10 or 100 classes: build it, then replace the head
                net = get_model(name, in_channels=channels)
                _replace_head(net, name, num_classes)
    except ValueError as exc:
        raise AuditError(f"unknown --model {name!r}: {exc}") from exc
    except TypeError as exc:
        raise AuditError(f"--model {name!r} cannot be built for {channels}-channel input") from exc
    _adapt_final_pool(net)
    return NormalizedClassifier(net, channels)


def _replace_head(net: nn.Module, name: str, num_classes: int) -> None:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AuditError(f"--model {name!r} cannot be adapted to {num_classes} classes")
    path, last = linears[-1]
    parent = net.get_submodule(path.rsplit(".", 1)[0]) if "." in path else net
    setattr(parent, path.rsplit(".", 1)[-1], nn.Linear(last.in_features, num_classes))


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def require_bn(model: nn.Module, name: str) -> None:
    if not bn_layers(model):
        raise AuditError(
            f"model {name!r} has no BatchNorm layers; BN-statistics matching needs them"
        )


def _summarise_mismatch(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
    return detail[:300]


def weights_format(path: str) -> str:
    """ "suite" for a file this suite saved (normalisation included), "pytorchcv" for a bare
    state dict such as pytorchcv's published checkpoints (read with weights_only=True)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return (
        "suite" if isinstance(state, dict) and "mean" in state and "std" in state else "pytorchcv"
    )


def load_weights(
    model: NormalizedClassifier, path: str, *, model_name: str, flag: str = "--weights"
) -> None:
    """Load a file saved by this suite (normalisation included) or a bare pytorchcv state dict
    (e.g. a ~/.torch/models cache file), which gets pytorchcv's CIFAR normalisation."""
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
