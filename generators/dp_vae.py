"""DP-VAE: the label-conditional VAE (generators/vae.py) trained end to end with DP-SGD.

For each target epsilon the noise multiplier is solved on Opacus's RDP accountant for the run's
sampling (sample rate = 1 / ceil(records / batch), epochs x 1 / rate steps) at --delta, then one
model is trained and sampled: z ~ N(0, I), balanced labels, --n-synthetic images. Everything the
release depends on (encoder and decoder) saw the private records only through DP-SGD, so any
score computed from the trained model is post-processing and covered by the guarantee.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from audit.core.accounting import DP_RECORD_COLUMNS, DPRecord, solve_noise
from audit.core.sections import DPConfig, VAEConfig
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.dp_sgd import PerRecordLoss, Schedule, train_dp_sgd
from generators.gradient_canaries import GradientCanaries
from generators.vae import VAEGenerator, check_vae, dp_vae_seconds, private_data, release_of
from generators.vae_model import ConditionalVAE, build_vae, per_record_loss

log = logging.getLogger(__name__)


def vae_loss(kl_weight: float) -> PerRecordLoss:
    """The VAE's per-record negative ELBO in the form train_dp_sgd calls.

    Args:
        kl_weight: the KL term's weight, >= 0 (the `vae` section's).

    Returns:
        (model, x, y, generator) -> (N,) negative ELBO of each record; model must be a
        ConditionalVAE (asserted).
    """

    def loss(
        model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        assert isinstance(model, ConditionalVAE)
        return per_record_loss(model, x, y, kl_weight, generator)

    return loss


class DPVAE(VAEGenerator):
    name = "dp_vae"

    def __init__(self, vae: VAEConfig, dp: DPConfig) -> None:
        self.vae, self.dp = vae, dp

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """One DP-SGD training and one sampled release per target epsilon.

        Args:
            request: the generation request (its private records, epsilons, n_images, seed,
                device, gradient canaries; on_set, where set, is called with each release).

        Returns:
            {epsilon: release} per target epsilon, each release's info the DP record's columns,
            its score_records the negative ELBO and its gradient_scores the canaries' (or None).

        Raises:
            AuditError: no private records, fewer than 2, an image size not divisible by 4, or
                more gradient canaries than the decoder has parameters.
        """
        data = private_data(request)
        schedule = Schedule.of(planned_records(request), self.vae.batch_size, self.vae.epochs)
        sets: dict[SetKey, SyntheticSet] = {}
        for epsilon in request.epsilons:
            noise = solve_noise(
                epsilon=epsilon,
                delta=self.dp.delta,
                sample_rate=schedule.sample_rate,
                steps=schedule.steps,
            )
            stream = f"{self.name}-eps{epsilon:g}"
            model = build_vae(request, self.vae, stream=stream)
            canaries = gradient_canaries(request)
            ran = train_dp_sgd(
                model,
                vae_loss(self.vae.kl_weight),
                data.x,
                data.y,
                schedule=schedule,
                noise_multiplier=noise * self.dp.actual_noise_factor,
                clip=self.dp.clip,
                lr=self.vae.lr,
                seed=request.seed,
                stream=stream,
                canaries=canaries,
                canary_host=model.decoder,
                skip_clipping=self.dp.fault_skip_clipping,
            )
            record = DPRecord(epsilon, self.dp.delta, ((noise, ran.sample_rate, ran.steps),))
            sets[epsilon] = release(request, model, record, stream, canaries)
            if request.on_set is not None:
                request.on_set(epsilon, sets[epsilon])
        return sets


def planned_records(request: GenerationRequest) -> int:
    """The public record count the DP schedule is planned for: the request's, else the number
    of private records (the usual assumption that n is public).

    Args:
        request: the generation request (its planned_records, else its private_images).

    Returns:
        The record count, >= 0.
    """
    assert request.private_images is not None
    return request.planned_records or len(request.private_images)


def gradient_canaries(request: GenerationRequest) -> GradientCanaries | None:
    """A fresh set of the request's white-box gradient canaries for one training (the same
    coordinates and signs in every training of the run: seeded by the run's seed).

    Args:
        request: the generation request (its gradient_canary_coins and seed).

    Returns:
        m canaries, one per coin (True: inserted), scores at 0; None: the request plants none.
    """
    if request.gradient_canary_coins is None:
        return None
    return GradientCanaries(request.gradient_canary_coins, seed=request.seed)


def release(
    request: GenerationRequest,
    model: ConditionalVAE,
    record: DPRecord,
    stream: str,
    canaries: GradientCanaries | None = None,
) -> SyntheticSet:
    """Sample the release from a trained VAE and label it with its DP record (and the gradient
    canaries' scores, where the training planted them).

    Args:
        request: the generation request (its n_images, classes, seed and device).
        model: the trained VAE.
        record: the training's DP record (target epsilon, delta, noise, sample rate, steps).
        stream: the training's stream name, for the log line.
        canaries: the gradient canaries planted in the training; None: none.

    Returns:
        The release, its info the record's columns, its score_records the negative ELBO and
        its gradient_scores a copy of the canaries' (m,) float64 scores where there are any.
    """
    columns = record.columns()
    log.info(
        "[generate] %s: noise multiplier %.3g, %d steps at sample rate %.3g, accountant epsilon "
        "%.3g at delta %.0e",
        stream,
        columns["dp_noise_multiplier"],
        columns["dp_steps"],
        columns["dp_sample_rate"],
        columns["eps_accountant"],
        record.delta,
    )
    synthetic = release_of(model, request, columns)
    if canaries is None:
        return synthetic
    return dataclasses.replace(synthetic, gradient_scores=canaries.scores.copy())


PLUGIN = GeneratorPlugin(
    "dp_vae",
    axis="epsilon",
    build=lambda config: DPVAE(config.vae, config.dp),
    settings=("vae", "dp"),
    cost=dp_vae_seconds,
    columns=DP_RECORD_COLUMNS,
    summary="a label-conditional VAE trained with DP-SGD, one set per epsilon",
    check=check_vae,
)
