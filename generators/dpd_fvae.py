"""DPD-fVAE (papers/dpd-fvae-abstract.txt): a federated VAE whose decoder alone is shared.

Federated averaging is simulated in one process over `clients` clients, the members split among
them IID or by a Dirichlet(alpha) draw of each class's share per client (non-IID). Each client
keeps its own encoder; only the decoder travels. Every round the sampled clients start from the
server's decoder, train `local_epochs` on their own records (Opacus: Poisson sampling, clipping at
`clip`, noise multiplier `noise_multiplier`), and send their decoders back; the server averages
the updates and applies them with momentum SGD.

Two variants, two generators:

* `dpd_fvae` (sound, the default): each client trains its encoder AND its copy of the decoder as
  one module with DP-SGD, one clipped per-record gradient over both, one Gaussian noise draw per
  step. Every parameter that sees a private record is a DP output, so the encoder that feeds
  later decoder gradients is post-processing of earlier noisy steps (adaptive composition), and
  the client's guarantee is its accountant's: (noise, the client's sample rate, its steps). A
  record belongs to one client, so the clients compose in parallel and the row's epsilon is the
  largest client's. This is a theorem, under the assumptions below.
* `dpd_fvae_published` (the paper's public code): the encoder is trained locally WITHOUT
  privacy beside the DP decoder. It then computes the latent behind every decoder gradient from
  all of the client's records, so one record changes the other records' decoder gradients and
  the per-step sensitivity is not the clip norm: its epsilon is the decoder's accounting only,
  NOT a formal guarantee. Its row says so (dp_formal false) and the gate does not check it.

Privacy: one RDP accountant per client, charged for that client's DP steps; a client stops
(mid-round if need be) when one more step would exceed the target epsilon. With a fixed noise
multiplier (the public code: 1.2) the training length follows from the budget; at small epsilon
and few records per client that can be no step at all. By default the noise is instead solved per
epsilon so that every client can run the whole plan (rounds x local epochs).

Every client samples at one public rate, planned for (public record count) / clients records, and
the noise and every client's step budget follow from that rate: no client's actual size moves
them. Each record's client is a function of that record alone (its bytes and the seed; with the
Dirichlet partition, class shares drawn from the seed), so adding a record moves no other record
to another client, and no client is dropped (a run whose partition leaves a client empty stops
with an error instead). The guarantee is for add/remove-one neighbours (Poisson sampling, the RDP
accountant); under replace-one the replaced record may sit at another client, up to 2 epsilon.
Treated as public (not charged to the budget, stated in the report): the number of records, and
that every client holds at least one.

The canary audit scores this generator by its decoder alone (decoder_fit_loss and gradient
canaries in the decoder), never by the encoders, which are never released.
"""

from __future__ import annotations

import copy
import logging
from functools import partial

import torch
from torch import nn

from audit.core.accounting import (
    DP_RECORD_COLUMNS,
    DPRecord,
    rdp_epsilon,
    solve_noise,
    steps_within,
)
from audit.core.columns import DP, NEUTRAL, Column
from audit.core.config import RunConfig
from audit.core.sections import FedConfig
from audit.core.seeding import numpy_rng, seeded_global_rng
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.dp_sgd import Schedule, train_dp_sgd
from generators.dp_vae import gradient_canaries, planned_records
from generators.federation import partition
from generators.gradient_canaries import GradientCanaries
from generators.vae import IMAGE_EPOCH_S, VAEGenerator, check_vae, private_data, sample_release
from generators.vae_model import (
    ConditionalVAE,
    Decoder,
    Encoder,
    decoder_fit_loss,
    kl_divergence,
    reconstruction_loss,
    reparameterise,
)

log = logging.getLogger(__name__)


class ClientVAE(nn.Module):
    """A client's encoder and its copy of the decoder, one module for DP-SGD (the sound
    variant: one clipped per-record gradient over both)."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder


class ClientLoss:
    """A client's per-record negative ELBO through its encoder and the decoder; whichever of
    them DP-SGD trains is the `module` argument, called through these same layers."""

    def __init__(self, encoder: Encoder, decoder: Decoder, kl_weight: float) -> None:
        self.encoder, self.decoder, self.kl_weight = encoder, decoder, kl_weight

    def __call__(
        self, _module: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        mu, logvar = self.encoder(x, y)
        z = reparameterise(mu, logvar, gen)
        loss = reconstruction_loss(self.decoder(z, y), x)
        return loss + self.kl_weight * kl_divergence(mu, logvar)


class DPDfVAE(VAEGenerator):
    def __init__(
        self, fed: FedConfig, delta: float, *, published: bool, skip_clipping: bool = False
    ) -> None:
        self.fed, self.delta, self.published = fed, delta, published
        self.skip_clipping = skip_clipping
        self.name = "dpd_fvae_published" if published else "dpd_fvae"

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """One federated training and one sampled release per target epsilon.

        Args:
            request: the generation request (its private records, epsilons, n_images, seed,
                device, gradient canaries; on_set, where set, is called with each release).

        Returns:
            {epsilon: release} per target epsilon, each release's info the DP record's columns,
            dp_clients, fl_rounds and dp_formal (False for the published variant), its
            score_records `decoder_fit_loss` and its gradient_scores the canaries' (or None).

        Raises:
            AuditError: no private records, fewer than 2, an unknown partition or an empty
                client, an image size not divisible by 4, or more gradient canaries than the
                decoder has parameters.
        """
        sets: dict[SetKey, SyntheticSet] = {}
        for epsilon in request.epsilons:
            decoder, record, federation, canaries = self.train(request, epsilon)
            images, labels = sample_release(
                decoder,
                request.n_images,
                request.num_classes,
                latent=self.fed.latent,
                seed=request.seed,
                device=request.device,
            )
            score = partial(
                decoder_fit_loss, decoder, latent=self.fed.latent, device=request.device
            )
            info = {**record.columns(), **federation, "dp_formal": not self.published}
            sets[epsilon] = SyntheticSet(
                images,
                labels,
                info,
                score_records=score,
                gradient_scores=None if canaries is None else canaries.scores.copy(),
            )
            if request.on_set is not None:
                request.on_set(epsilon, sets[epsilon])
        return sets

    def client_schedule(self, planned: int) -> Schedule:
        """One client's local training per round, public: planned for planned / clients records
        (the IID share of the public record count), whatever each client actually holds.

        Args:
            planned: the public record count, >= 0 (a client plans for max(1, planned //
                clients) records).

        Returns:
            The `fed` section's local epochs at its batch size: sample rate and steps per
            round.
        """
        fed = self.fed
        return Schedule.of(max(1, planned // fed.clients), fed.batch_size, fed.local_epochs)

    def noise_for(self, epsilon: float, local: Schedule) -> float:
        """The fixed noise multiplier if one is set (the public code's rule: clients stop when
        their budget is spent), else the noise that lets a client run its whole plan (rounds x
        local epochs, were it sampled every round) within epsilon.

        Args:
            epsilon: the target epsilon, > 0.
            local: one client's per-round schedule (its sample rate and steps).

        Returns:
            The noise multiplier (std in units of the clip norm): the `fed` section's fixed
            one, else the solved one, > 0.
        """
        fed = self.fed
        if fed.noise_multiplier is not None:
            return fed.noise_multiplier
        return solve_noise(
            epsilon=epsilon,
            delta=self.delta,
            sample_rate=local.sample_rate,
            steps=local.steps * fed.rounds,
        )

    def train(
        self, request: GenerationRequest, epsilon: float
    ) -> tuple[Decoder, DPRecord, dict[str, int], GradientCanaries | None]:
        """The trained shared decoder, its DP record, the federation's figures and the gradient
        canaries planted in its clients' trainings (None: none requested).

        Args:
            request: the generation request (its private records, seed, device, canary coins).
            epsilon: the target epsilon, > 0.

        Returns:
            (decoder, record, federation, canaries): the server's decoder in eval mode; the DP
            record (noise, the clients' sample rate, the largest client's steps); a dict with
            keys "dp_clients" and "fl_rounds" (rounds run); the canaries with their scores, or
            None.

        Raises:
            AuditError: no private records, fewer than 2, an unknown partition or an empty
                client, an image size not divisible by 4, or more gradient canaries than the
                decoder has parameters.
        """
        fed, data = self.fed, private_data(request)
        stream = f"{self.name}-eps{epsilon:g}"
        rng = numpy_rng(request.seed, stream, "clients")
        assert request.private_images is not None and request.private_labels is not None
        parts = partition(
            request.private_images,
            request.private_labels,
            clients=fed.clients,
            how=fed.partition,
            alpha=fed.dirichlet_alpha,
            num_classes=request.num_classes,
            seed=request.seed,
        )
        shape = (request.channels, request.image_size, request.num_classes, fed.latent)
        with seeded_global_rng(request.seed, stream, "init"):
            server = ConditionalVAE(*shape).decoder.to(request.device)
            encoders = [Encoder(*shape).to(request.device) for _ in parts]
        encoder_opts = [torch.optim.Adam(e.parameters(), lr=fed.lr) for e in encoders]
        canaries = gradient_canaries(request)
        if canaries is not None:
            canaries.assign_owners(len(parts))
        local_plan = self.client_schedule(planned_records(request))
        noise = self.noise_for(epsilon, local_plan)
        # one public sample rate and budget for every client: no client's size moves them
        budget = steps_within(
            epsilon=epsilon, delta=self.delta, noise=noise, sample_rate=local_plan.sample_rate
        )
        budgets = [budget] * len(parts)
        spent = [0] * len(parts)
        velocity = [torch.zeros_like(p) for p in server.parameters()]
        per_round = max(1, round(fed.client_fraction * len(parts)))
        rounds_run = 0
        for round_index in range(fed.rounds):
            active = [c for c in range(len(parts)) if spent[c] < budgets[c]]
            if not active:
                break
            chosen = rng.choice(active, size=min(per_round, len(active)), replace=False)
            updates = []
            for c in sorted(int(i) for i in chosen):
                local = copy.deepcopy(server)
                idx = torch.as_tensor(parts[c], device=request.device)
                module, companion = self.client_training(encoders[c], local, encoder_opts[c])
                ran = train_dp_sgd(
                    module,
                    ClientLoss(encoders[c], local, fed.kl_weight),
                    data.x[idx],
                    data.y[idx],
                    schedule=local_plan,
                    noise_multiplier=noise,
                    clip=fed.clip,
                    lr=fed.lr,
                    seed=request.seed,
                    stream=f"{stream}-client{c}-round{round_index}",
                    max_steps=budgets[c] - spent[c],
                    companion=companion,
                    canaries=canaries,
                    canary_host=local,
                    client=c,
                    skip_clipping=self.skip_clipping,
                )
                spent[c] += ran.steps
                pairs = zip(local.parameters(), server.parameters(), strict=True)
                updates.append([lp.detach() - sp.detach() for lp, sp in pairs])
            with torch.no_grad():
                for i, param in enumerate(server.parameters()):
                    mean_update = torch.stack([u[i] for u in updates]).mean(0)
                    velocity[i].mul_(fed.server_momentum).add_(mean_update)
                    param.add_(fed.server_lr * velocity[i])
            rounds_run += 1
        # the worst-off client's guarantee is the row's (each record belongs to one client)
        # same noise and sample rate for all: the client with the most steps dominates the
        # others at every RDP order, so its phase bounds every record's cost
        q = local_plan.sample_rate
        client_eps = [rdp_epsilon([(noise, q, n)], delta=self.delta) for n in spent]
        record = DPRecord(epsilon, self.delta, ((noise, q, max(spent)),))
        log.info(
            "[generate] %s: %d clients (%s), %d rounds, %d-%d DP steps per client; largest "
            "client epsilon %.3g at delta %.0e",
            stream,
            len(parts),
            fed.partition,
            rounds_run,
            min(spent),
            max(spent),
            max(client_eps),
            self.delta,
        )
        if max(spent) == 0:
            log.warning(
                "[generate] %s: noise %.3g allows no DP step within epsilon %g at the clients' "
                "sample rate %.3g: the release is the untrained decoder. Give each "
                "client more records (fewer --clients) or a larger epsilon",
                stream,
                noise,
                epsilon,
                q,
            )
        federation = {"dp_clients": len(parts), "fl_rounds": rounds_run}
        return server.eval(), record, federation, canaries

    def client_training(
        self, encoder: Encoder, decoder: Decoder, encoder_opt: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        """(the module DP-SGD trains, the optimiser stepped beside it without privacy).

        Args:
            encoder: the client's own encoder.
            decoder: the client's copy of the server's decoder for this round.
            encoder_opt: the client's Adam over its encoder (used by the published variant).

        Returns:
            (module, companion): the sound variant's (ClientVAE of both, None); the published
            variant's (decoder, encoder_opt); the optimiser-swap fault's (encoder, a fresh Adam
            over the decoder).
        """
        if self.fed.fault_swap_optimisers:  # the fault: DP on the encoder, plain decoder
            return encoder, torch.optim.Adam(decoder.parameters(), lr=self.fed.lr)
        if self.published:  # the public code: DP decoder, non-private encoder
            return decoder, encoder_opt
        return ClientVAE(encoder, decoder), None


def federated_seconds(config: RunConfig, members: int) -> float:
    """rounds x local epochs over the members (split among the clients), per target epsilon.

    Args:
        config: the run's config (its `fed` section's rounds and local epochs, its epsilons).
        members: the number of private records trained on, >= 0.

    Returns:
        Estimated seconds on the reference 2-core CPU at 16x16 px, >= 0.
    """
    epochs = config.fed.rounds * config.fed.local_epochs * len(config.epsilon)
    return IMAGE_EPOCH_S * epochs * members


# what a DPD-fVAE row adds to the DP record's columns
FEDERATION_COLUMNS: tuple[Column, ...] = (
    Column("dp_clients", "DPD-fVAE: simulated clients", "integer >= 1", NEUTRAL, DP),
    Column("fl_rounds", "DPD-fVAE: federated rounds run", "integer >= 0", NEUTRAL, DP),
)


def _plugin(name: str, *, published: bool, summary: str) -> GeneratorPlugin:
    return GeneratorPlugin(
        name,
        axis="epsilon",
        build=lambda config: DPDfVAE(
            config.fed,
            config.dp.delta,
            published=published,
            skip_clipping=config.dp.fault_skip_clipping,
        ),
        settings=("fed", "dp"),
        cost=federated_seconds,
        check=check_vae,
        columns=(*DP_RECORD_COLUMNS, *FEDERATION_COLUMNS),
        summary=summary,
    )


PLUGIN = _plugin(
    "dpd_fvae",
    published=False,
    summary="federated DP-VAE, each client's encoder and decoder under DP-SGD",
)
PUBLISHED_PLUGIN = _plugin(
    "dpd_fvae_published",
    published=True,
    summary="the published code: its epsilon is not a formal guarantee",
)
