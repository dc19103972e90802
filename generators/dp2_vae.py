"""DP^2-VAE (papers/dp2-vae-abstract.txt): DP training with pre-training on the private data.

The abstract leaves the method open; this is what we implement, and why:

* Stage 1 pre-trains the whole VAE with DP-SGD on the private records (`pretrain_share` of the
  epochs).
* Stage 2 freezes the encoder and trains the decoder alone with DP-SGD for the remaining epochs.
  Its gradients have fewer coordinates, so the same noise multiplier perturbs fewer parameters:
  the clipped signal is shared by the decoder only, which is the "less noise for the same budget"
  the paper argues for.
* Both stages use the same sample rate and one noise multiplier, solved so that the two phases
  composed in one RDP accountant cost the target epsilon. The frozen encoder feeds stage 2 but is
  itself a DP output of stage 1, so the whole release (and any score computed from the model)
  stays post-processing of a DP mechanism.

Not implemented: the paper's theory-driven split of the budget between stages; the share is a
config value (default half). The non-private ablation is the `vae` generator (NOT PRIVATE).
"""

from __future__ import annotations

import logging
from functools import partial

import torch

from audit.core.accounting import DP_RECORD_COLUMNS, DPRecord, solve_noise
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.sections import DPConfig, VAEConfig
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.dp_sgd import Schedule, train_dp_sgd
from generators.dp_vae import gradient_canaries, planned_records, release, vae_loss
from generators.vae import VAEGenerator, check_vae, dp_vae_seconds, private_data
from generators.vae_model import ConditionalVAE, build_vae, reconstruction_loss

log = logging.getLogger(__name__)


def stage_epochs(epochs: int, pretrain_share: float) -> tuple[int, int]:
    """(stage 1, stage 2) epochs: at least one each (the config needs epochs >= 2).

    Args:
        epochs: expected passes over the private records in all, >= 2 (vae.epochs).
        pretrain_share: the share of them spent on stage 1, in [0, 1] (dp.pretrain_share).

    Returns:
        (stage 1 epochs, stage 2 epochs), each >= 1, summing to epochs.

    Raises:
        AuditError: epochs < 2.
    """
    if epochs < 2:
        raise AuditError(f"dp2_vae needs at least 2 epochs (one per stage), got {epochs}")
    first = min(max(1, round(epochs * pretrain_share)), epochs - 1)
    return first, epochs - first


class FrozenEncoderLoss:
    """Stage 2's per-record loss: the frozen encoder gives each record's latent, the decoder (the
    module DP-SGD trains) is scored on it. The KL term is constant in the decoder and left out."""

    def __init__(self, model: ConditionalVAE) -> None:
        self.model = model

    def __call__(
        self, decoder: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        with torch.no_grad():
            mu, logvar = self.model.encoder(x, y)
            z = mu + torch.randn(mu.shape, generator=gen, device=mu.device) * (0.5 * logvar).exp()
        return reconstruction_loss(decoder(z, y), x)


class DP2VAE(VAEGenerator):
    name = "dp2_vae"

    def __init__(self, vae: VAEConfig, dp: DPConfig) -> None:
        self.vae, self.dp = vae, dp

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """Train the two-stage DP VAE once per target epsilon and sample its release.

        Args:
            request: the private records, the epsilons, set size, image shape, seed and device;
                gradient canary coins, planned_records and on_set (called per epsilon) where
                given.

        Returns:
            Target epsilon -> SyntheticSet whose info holds the DP record's columns (noise
            multiplier, steps, sample rate, accountant epsilon).

        Raises:
            AuditError: no private records or fewer than 2, vae.epochs < 2, or no noise
                multiplier within the accountant's range meets an epsilon.
        """
        data = private_data(request)
        first, second = stage_epochs(self.vae.epochs, self.dp.pretrain_share)
        n = planned_records(request)
        stage1 = Schedule.of(n, self.vae.batch_size, first)
        stage2 = Schedule.of(n, self.vae.batch_size, second)
        sets: dict[SetKey, SyntheticSet] = {}
        for epsilon in request.epsilons:
            # one noise for both phases; same sample rate, so the composition is one mechanism
            # run for steps1 + steps2 steps
            noise = solve_noise(
                epsilon=epsilon,
                delta=self.dp.delta,
                sample_rate=stage1.sample_rate,
                steps=stage1.steps + stage2.steps,
            )
            stream = f"{self.name}-eps{epsilon:g}"
            model = build_vae(request, self.vae, stream=stream)
            canaries = gradient_canaries(request)  # in the decoder: trained in both stages
            train = partial(
                train_dp_sgd,
                x=data.x,
                y=data.y,
                noise_multiplier=noise * self.dp.actual_noise_factor,
                clip=self.dp.clip,
                lr=self.vae.lr,
                seed=request.seed,
                canaries=canaries,
                canary_host=model.decoder,
                skip_clipping=self.dp.fault_skip_clipping,
            )
            ran1 = train(
                model, vae_loss(self.vae.kl_weight), schedule=stage1, stream=f"{stream}-stage1"
            )
            for p in model.encoder.parameters():
                p.requires_grad_(False)
            ran2 = train(
                model.decoder, FrozenEncoderLoss(model), schedule=stage2, stream=f"{stream}-stage2"
            )
            record = DPRecord(
                epsilon,
                self.dp.delta,
                ((noise, ran1.sample_rate, ran1.steps), (noise, ran2.sample_rate, ran2.steps)),
            )
            sets[epsilon] = release(request, model, record, stream, canaries)
            if request.on_set is not None:
                request.on_set(epsilon, sets[epsilon])
        return sets


def check_two_stages(config: RunConfig, channels: int, image_size: int) -> None:
    """The VAEs' input check plus two stages of at least one epoch each, before any file.

    Args:
        config: the run's config (its `vae` section's epochs).
        channels: the private images' channels.
        image_size: the private images' side in pixels.

    Raises:
        AuditError: image_size not divisible by 4, or vae.epochs < 2.
    """
    check_vae(config, channels, image_size)
    if config.vae.epochs < 2:
        raise AuditError(
            f"dp2_vae trains in two stages of at least one epoch each: --dp-epochs (vae.epochs) "
            f"must be at least 2, got {config.vae.epochs}"
        )


PLUGIN = GeneratorPlugin(
    "dp2_vae",
    axis="epsilon",
    build=lambda config: DP2VAE(config.vae, config.dp),
    settings=("vae", "dp"),
    cost=dp_vae_seconds,
    columns=DP_RECORD_COLUMNS,
    summary="DP^2-VAE: the whole VAE, then its decoder, under DP-SGD",
    check=check_two_stages,
)
