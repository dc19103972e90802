"""DP-SGD through Opacus: Poisson sampling, per-record clipping, Gaussian noise.

One function trains any module on a strictly per-record loss; the generators decide what the
module is (the whole VAE, or its decoder with the encoder frozen) and charge every phase to one
accountant (generators/accounting.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from audit.errors import AuditError
from audit.seeding import torch_generator

# (module, images, labels, generator) -> the loss of each record, shape (N,)
PerRecordLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """Poisson sampling as Opacus runs it: each record joins a step's batch with probability
    sample_rate = 1 / ceil(n / batch_size), and an epoch is ceil(n / batch_size) steps."""

    sample_rate: float
    steps: int

    @classmethod
    def of(cls, n_records: int, batch_size: int, epochs: int) -> Schedule:
        per_epoch = math.ceil(n_records / batch_size)
        return cls(1.0 / per_epoch, epochs * per_epoch)


def require_dp_compatible(module: nn.Module) -> None:
    """Opacus's own validator: no BatchNorm or other layer mixing records of a batch."""
    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        raise AuditError(f"module not trainable with DP-SGD: {errors[0]}")


def train_dp_sgd(
    module: nn.Module,
    loss_fn: PerRecordLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_multiplier: float,
    clip: float,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int,
    stream: str,
    max_steps: int | None = None,
    companion: torch.optim.Optimizer | None = None,
) -> Schedule:
    """Train `module` (in place) with DP-SGD and Adam, adding noise_multiplier x clip of noise
    per step; returns the sampling it ran (sample rate, steps). Trains only the parameters with
    requires_grad; loss_fn is called on `module` itself (Opacus's hooks sit on its layers).

    max_steps: stop there even mid-epoch (a budget spent). companion: an optimiser of parameters
    outside `module` that the loss also trains, stepped beside it WITHOUT privacy (DPD-fVAE's
    client encoders)."""
    module.train()
    require_dp_compatible(module)
    device = x.device
    if max_steps == 0:
        return Schedule(1.0 / math.ceil(len(x) / batch_size), 0)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        generator=torch_generator(seed, stream, "sampling"),
    )
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    with warnings.catch_warnings():  # "secure RNG turned off": seeded on purpose (reproducible)
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant="rdp")
        private, dp_optimizer, dp_loader = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=clip,
            poisson_sampling=True,
            noise_generator=torch_generator(seed, stream, "noise", device=str(device)),
        )
    generator = torch_generator(seed, stream, "latent", device=str(device))
    steps = 0
    private.train()
    limit = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    with warnings.catch_warnings():
        # "full backward hook firing ... no inputs require gradients": Opacus's hooks on the
        # first layer, whose input (the images) needs no gradient; harmless
        warnings.filterwarnings("ignore", "Full backward hook is firing", category=UserWarning)
        while steps < limit:
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                if companion is not None:
                    companion.zero_grad(set_to_none=True)
                # mean over the batch: Opacus's loss_reduction="mean" rescales it per record
                loss_fn(module, xb, yb, generator).mean().backward()
                dp_optimizer.step()
                if companion is not None:
                    companion.step()
                steps += 1
                if steps == limit:
                    break
    private.remove_hooks()
    module.eval()
    schedule = Schedule(1.0 / len(loader), steps)
    # Opacus's own accountant saw the same sampling as the phase the caller reports
    assert [(q, n) for _sigma, q, n in engine.accountant.history] == [
        (schedule.sample_rate, steps)
    ], engine.accountant.history
    return schedule
