"""pytorchcv CIFAR classifiers adapted to the data, with their input normalisation stored inside."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable

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
        """Map images to the network's input scale with the stored per-channel mean and std.

        Args:
            x: (N, C, H, W) float images, pixels in [0, 1].

        Returns:
            (N, C, H, W) float, (x - mean) / std per channel.
        """
        return (x - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Undo `normalize`: map network-scale images back to pixel scale (no clamping).

        Args:
            z: (N, C, H, W) float normalised images.

        Returns:
            (N, C, H, W) float, z * std + mean per channel (in [0, 1] for valid images).
        """
        return z * self.std + self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images given in pixel scale: normalise them, then run the wrapped network.

        Args:
            x: (N, C, H, W) float images, pixels in [0, 1].

        Returns:
            (N, num_classes) float logits.
        """
        return self.net(self.normalize(x))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Overwrite the per-channel normalisation buffers in place (saved with the weights).

        Args:
            mean: C float values (any shape with C elements), per-channel mean in [0, 1] units.
            std: C float values, per-channel std in [0, 1] units; clamped to >= 1e-3.
        """
        channels = self.mean.shape[1]
        self.mean.copy_(mean.reshape(1, channels, 1, 1))
        self.std.copy_(std.reshape(1, channels, 1, 1).clamp_min(1e-3))


def quantise(teacher: NormalizedClassifier, z: torch.Tensor) -> np.ndarray:
    """Normalised tensor -> uint8 NHWC: de-normalise, clamp to [0, 1], round to 1/255.

    Args:
        teacher: the classifier whose normalisation buffers undo the normalisation of z.
        z: (N, C, H, W) float normalised images; detached, so no gradient flows back.

    Returns:
        (N, H, W, C) uint8 numpy array on the CPU, pixels in [0, 255].
    """
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
    """--model module:function names the user's own code; anything else is a pytorchcv name.

    Args:
        name: the --model value.

    Returns:
        True when name contains ":" (a user model), else False.
    """
    return ":" in name


def user_model_builder(name: str) -> Callable[..., object]:
    """The function a `module:function` --model names, imported from the Python path (the
    current directory included); AuditError when it cannot be found.

    Args:
        name: the --model value, "module:function" (e.g. "mynets:small_bn_cnn").

    Returns:
        The named callable (the model builder), not yet called.

    Raises:
        AuditError: name lacks the module or the function part, the module fails to import, or
            it has no callable of that name.
    """
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
    NCHW images (normalised by the suite) to logits, ending in a Linear layer.

    Args:
        name: the --model value, "module:function".
        channels: image channels the model takes, >= 1 (1 grey, 3 RGB).
        num_classes: number of classes (logits) it must output, >= 1.
        image_size: side of the square input images, in pixels.

    Returns:
        The user's model, unwrapped (build_model wraps it in a NormalizedClassifier).

    Raises:
        AuditError: the builder cannot be found (see user_model_builder), raises, returns
            something other than an nn.Module, or returns a model with no nn.Linear layer.
    """
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
    """One forward pass of two blank images: AuditError unless it gives (2, classes) logits.

    The pass runs in eval mode without gradients; the model's training mode is restored after.

    Args:
        model: the classifier to probe (takes (N, C, H, W) float images).
        name: the --model value, named in the error message.
        channels: image channels, >= 1.
        image_size: side of the square images, in pixels.
        classes: number of logits expected per image, >= 1.

    Raises:
        AuditError: the forward pass raises, or its output is not a (2, classes) tensor.
    """
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
    from a named stream of the seed.

    Args:
        name: a pytorchcv CIFAR model name (ending in _cifar10, _cifar100 or _svhn, e.g.
            resnet20_cifar10) or "module:function" naming the user's builder.
        channels: image channels, >= 1.
        num_classes: number of classes, >= 1; a pytorchcv net that only accepts 10 or 100 gets
            its last Linear layer replaced.
        seed: the run seed.
        stream: name of the random stream of the seed that draws the initial weights.
        image_size: side of the square images, in pixels; passed to a user's builder only
            (pytorchcv nets get a global average pool that works at any size).

    Returns:
        The model wrapped with default normalisation buffers (mean 0.5, std 0.25).

    Raises:
        AuditError: name is neither a pytorchcv CIFAR name nor module:function, pytorchcv does
            not know it or cannot build it for `channels`, its head cannot be replaced, or the
            user's builder fails (see build_user_model).
    """
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
    """Every BatchNorm layer of a model, the ones BN-statistics matching reads.

    Args:
        model: any torch module.

    Returns:
        Its BatchNorm (1d, 2d, 3d) modules in `model.modules()` order; empty when it has none.
    """
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def require_bn(model: nn.Module, name: str) -> None:
    """Fail early, naming the model, when it has no BatchNorm layer to match statistics of.

    Args:
        model: the classifier BN matching would use.
        name: the model's name (--model value), for the message.

    Raises:
        AuditError: the model has no BatchNorm layer.
    """
    if not bn_layers(model):
        raise AuditError(
            f"model {name!r} has no BatchNorm layers; BN-statistics matching needs them"
        )
