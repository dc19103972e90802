"""DP-SGD through Opacus: Poisson sampling, per-record clipping, Gaussian noise.

One function trains any module on a strictly per-record loss; the generators decide what the
module is (the whole VAE, or its decoder with the encoder frozen) and charge every phase to one
accountant (audit/core/accounting.py).

White-box audit (Steinke, Nasr & Jagielski 2023, their Dirac canaries): `GradientCanaries` plants
m gradient-only records in the training. Canary i is the gradient `scale x clip x sign_i` at one
coordinate of the released decoder and zero elsewhere; with its fair coin it joins each step's
batch with the step's sample rate, exactly like a record (Poisson sampling), and is clipped like
one. Its score is sign_i times the sum, over the steps, of the privatised gradient at its
coordinate: what DP-SGD releases at each step, so the audit sees nothing the guarantee does not
cover. No data record is needed, so thousands of canaries are cheap, and an audit with more
canaries can refute larger epsilons (attacks/canary.py `reach`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import TensorDataset

from audit.core.errors import AuditError
from audit.core.seeding import numpy_rng, torch_generator
from generators.gradient_canaries import GradientCanaries

# (module, images, labels, generator) -> the loss of each record, shape (N,)
PerRecordLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """Poisson sampling as Opacus runs it: each record joins a step's batch with probability
    sample_rate = 1 / ceil(n / batch_size), and an epoch is ceil(n / batch_size) steps.

    n is the PLANNED record count, a public figure: the sample rate, the steps and the noise must
    not move when one record is added or removed (the canary audit plans for the members and
    every canary, whichever coins come up)."""

    sample_rate: float
    steps: int
    planned_records: int = 0

    @classmethod
    def of(cls, n_records: int, batch_size: int, epochs: int) -> Schedule:
        """The schedule of `epochs` expected passes over n_records at an expected batch size.

        Args:
            n_records: the planned (public) record count, >= 1.
            batch_size: the expected batch size, >= 1.
            epochs: expected passes over the records, >= 0.

        Returns:
            sample_rate 1 / ceil(n_records / batch_size), steps epochs x ceil(n_records /
            batch_size), planned_records n_records.
        """
        per_epoch = math.ceil(n_records / batch_size)
        return cls(1.0 / per_epoch, epochs * per_epoch, n_records)

    @property
    def steps_per_epoch(self) -> int:
        """The steps of one expected pass over the records, 1 / sample_rate.

        Returns:
            The steps per epoch, >= 1 (rounded to the nearest integer).
        """
        return round(1.0 / self.sample_rate)


class _CanaryHooks:
    """Insert and score one training's gradient canaries. On the DP path they enter the clipped
    sum before the noise (clipped like a record) and are read after it; on a plain path (the
    optimiser-swap fault, whose decoder is trained without DP) they enter the mean gradient."""

    def __init__(
        self,
        canaries: GradientCanaries,
        host: nn.Module,
        client: int | None,
        sample_rate: float,
        rng: np.random.Generator,
    ) -> None:
        canaries.place(host)
        self.canaries, self.sample_rate, self.rng = canaries, sample_rate, rng
        params = dict(host.named_parameters())
        self.slots = [(params[name], local, ids) for name, (local, ids) in canaries._placed.items()]
        self.observed = canaries.mine(client)
        self.insertable = self.observed & canaries.included
        self.present = np.zeros(canaries.m, dtype=bool)

    def params(self) -> set[int]:
        return {id(p) for p, _local, _ids in self.slots}

    def draw(self) -> None:
        """This step's batch: each insertable canary joins with the sample rate."""
        self.present = self.insertable & (self.rng.random(self.canaries.m) < self.sample_rate)

    def insert(self, grad_of: Callable[[nn.Parameter], torch.Tensor], value: float) -> None:
        signs = self.canaries._signs
        for p, local, ids in self.slots:
            contribution = self.present[ids] * signs[ids] * value
            target = grad_of(p).view(-1)
            target.index_add_(0, local.to(target.device), torch.as_tensor(contribution).to(target))

    def read(self, grad_of: Callable[[nn.Parameter], torch.Tensor], unit: float) -> None:
        signs = self.canaries._signs
        for p, local, ids in self.slots:
            seen = grad_of(p).detach().reshape(-1)[local.to(p.device)].double().cpu().numpy()
            self.canaries.scores[ids] += self.observed[ids] * signs[ids] * seen * unit


def require_dp_compatible(module: nn.Module) -> None:
    """Opacus's own validator: no BatchNorm or other layer mixing records of a batch.

    Args:
        module: the module about to be trained with DP-SGD.

    Raises:
        AuditError: Opacus finds a layer it cannot train privately (the first one is named).
    """
    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        raise AuditError(f"module not trainable with DP-SGD: {errors[0]}")


def train_dp_sgd(
    module: nn.Module,
    loss_fn: PerRecordLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    schedule: Schedule,
    noise_multiplier: float,
    clip: float,
    lr: float,
    seed: int,
    stream: str,
    max_steps: int | None = None,
    companion: torch.optim.Optimizer | None = None,
    canaries: GradientCanaries | None = None,
    canary_host: nn.Module | None = None,
    client: int | None = None,
    skip_clipping: bool = False,
) -> Schedule:
    """Train `module` (in place) with DP-SGD and Adam on the records (x, y): Poisson sampling at
    the schedule's public sample rate for its steps, noise_multiplier x clip of noise per step;
    returns the sampling it ran (sample rate, steps). Trains only the parameters with
    requires_grad; loss_fn is called on `module` itself (Opacus's hooks sit on its layers).

    Args:
        module: the module DP-SGD trains, in place; in eval mode on return (train mode where
            the step limit is 0).
        loss_fn: (module, images, labels, generator) -> (N,) loss of each record; its
            batch mean is backpropagated.
        x: (N, C, H, W) float images, pixels in [0, 1], on the training device.
        y: (N,) int64 labels, on the same device.
        schedule: the public sampling plan (sample rate, steps, planned record count); the
            planned count (else len(x)) sets the mean's divisor, not the records present.
        noise_multiplier: Gaussian noise std in units of clip, >= 0.
        clip: the per-record gradient norm bound, > 0.
        lr: Adam's learning rate, > 0.
        seed: the run seed the sampling, noise, latent and canary generators derive from.
        stream: the name those generators are derived from, with seed.
        max_steps: stop there (a budget spent); None: the schedule's steps.
        companion: an optimiser of parameters outside `module` that the loss also trains,
            stepped beside it WITHOUT privacy (the published DPD-fVAE's client encoders);
            None: none.
        canaries: white-box gradient canaries to plant (their scores accumulate in place);
            None: none.
        canary_host: the module the canaries sit in (the decoder); needed with canaries.
        client: the client whose canaries this training observes; None: one central training.
        skip_clipping: TEST-ONLY fault, records' gradients (and canaries) enter the sum
            unclipped while the noise stays calibrated to clip.

    Returns:
        The sampling it ran: sample rate, steps actually taken (0 where the limit is 0) and
        the schedule's planned record count.

    Raises:
        AuditError: module has a layer Opacus cannot train privately, or more canaries than
            canary_host has parameters.
        ValueError: canaries without canary_host, or canary parameters not all trained by the
            DP optimiser nor all by the companion.
        RuntimeError: Opacus's accountant charged other sampling than the schedule plans.
    """
    module.train()
    require_dp_compatible(module)
    device = x.device
    limit = schedule.steps if max_steps is None else min(max_steps, schedule.steps)
    if limit == 0:
        return Schedule(schedule.sample_rate, 0, schedule.planned_records)
    # Poisson sampling at the public rate, whatever the number of records actually present
    loader = DPDataLoader(
        TensorDataset(x, y),
        sample_rate=schedule.sample_rate,
        generator=torch_generator(seed, stream, "sampling"),
    )
    loader.batch_sampler.steps = schedule.steps_per_epoch
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
            poisson_sampling=False,  # the loader above already samples as Poisson
            noise_generator=torch_generator(seed, stream, "noise", device=str(device)),
        )
    # the mean's divisor: the planned batch, not one computed from the records present
    planned = schedule.planned_records or len(x)
    dp_optimizer.expected_batch_size = max(1, round(planned * schedule.sample_rate))
    if skip_clipping:
        _skip_clipping(dp_optimizer)
    hooks, hooks_on_plain = None, False
    if canaries is not None:
        if canary_host is None:
            raise ValueError("gradient canaries need the module they are planted in")
        hooks = _CanaryHooks(
            canaries, canary_host, client, schedule.sample_rate, numpy_rng(seed, stream, "canaries")
        )
        if hooks.params() <= {id(p) for p in dp_optimizer.params}:
            _route_through_dp(dp_optimizer, hooks, skip_clipping)
        elif companion is not None and hooks.params() <= {
            id(p) for group in companion.param_groups for p in group["params"]
        }:
            hooks_on_plain = True
        else:
            raise ValueError("gradient canaries must sit in parameters one optimiser trains")
    generator = torch_generator(seed, stream, "latent", device=str(device))
    steps = 0
    private.train()
    with warnings.catch_warnings():
        # "full backward hook firing ... no inputs require gradients": Opacus's hooks on the
        # first layer, whose input (the images) needs no gradient; harmless
        warnings.filterwarnings("ignore", "Full backward hook is firing", category=UserWarning)
        while steps < limit:
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                if companion is not None:
                    companion.zero_grad(set_to_none=True)
                if hooks is not None:
                    hooks.draw()
                # mean over the batch: Opacus's loss_reduction="mean" rescales it per record
                loss_fn(module, xb, yb, generator).mean().backward()
                dp_optimizer.step()
                if companion is not None:
                    if hooks is not None and hooks_on_plain:
                        # a record's gradient enters a plain mean with weight 1 / batch size
                        batch = float(dp_optimizer.expected_batch_size)
                        hooks.insert(_grad, hooks.canaries.scale * clip / batch)
                        hooks.read(_grad, batch)
                    companion.step()
                steps += 1
                if steps == limit:
                    break
    private.remove_hooks()
    module.eval()
    ran = Schedule(1.0 / len(dp_loader), steps, schedule.planned_records)
    # Opacus's own accountant saw the same sampling as the phase the caller reports (raised, not
    # asserted: python -O must not skip it)
    charged = [(q, n) for _sigma, q, n in engine.accountant.history]
    if not math.isclose(ran.sample_rate, schedule.sample_rate) or charged != [
        (ran.sample_rate, steps)
    ]:
        raise RuntimeError(f"Opacus charged {charged}, the schedule planned {schedule}")
    return ran


def _grad(p: nn.Parameter) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p.grad


def _summed_grad(p: nn.Parameter) -> torch.Tensor:
    summed: torch.Tensor = getattr(p, "summed_grad")  # noqa: B009  # set by Opacus's clipping
    return summed


def _skip_clipping(dp_optimizer: DPOptimizer) -> None:
    """The fault: clip with an infinite norm (factor 1) while the noise keeps using clip."""
    clip_and_accumulate = dp_optimizer.clip_and_accumulate

    def unclipped() -> None:
        norm = dp_optimizer.max_grad_norm
        dp_optimizer.max_grad_norm = math.inf
        try:
            clip_and_accumulate()
        finally:
            dp_optimizer.max_grad_norm = norm

    dp_optimizer.clip_and_accumulate = unclipped


def _route_through_dp(dp_optimizer: DPOptimizer, hooks: _CanaryHooks, skip_clipping: bool) -> None:
    """Canaries into Opacus's clipped sum (clipped as Opacus clips a record: factor
    min(1, clip / (norm + 1e-6))), read from the noisy sum before the batch-size scaling."""
    add_noise = dp_optimizer.add_noise

    def with_canaries() -> None:
        clip = dp_optimizer.max_grad_norm
        norm = hooks.canaries.scale * clip
        factor = 1.0 if skip_clipping else min(1.0, clip / (norm + 1e-6))
        hooks.insert(_summed_grad, norm * factor)
        add_noise()
        hooks.read(_grad, 1.0)

    dp_optimizer.add_noise = with_canaries
