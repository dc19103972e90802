"""DPD-fVAE (papers/dpd-fvae-abstract.txt): a federated VAE whose decoder alone is shared and
trained with DP-SGD.

Federated averaging is simulated in one process over `clients` clients, the members split among
them IID or by a Dirichlet(alpha) draw of each class's share per client (non-IID). Each client
keeps its own encoder, trained locally without privacy; only the decoder travels. Every round the
sampled clients start from the server's decoder, train `local_epochs` with DP-SGD on their own
records (Opacus: Poisson sampling, clipping at `clip`, noise multiplier `noise_multiplier`), and
send their decoders back; the server averages the updates and applies them with momentum SGD.

Privacy: one RDP accountant per client, charged for that client's DP steps; a client stops
(mid-round if need be) when one more step would exceed the target epsilon. With a fixed noise
multiplier (the public code: 1.2) the training length follows from the budget; at small epsilon
and few records per client that can be no step at all. By default the noise is instead solved per
epsilon so that every client can run the whole plan (rounds x local epochs). A record belongs to one
client, so its guarantee is its client's: the row reports the largest client epsilon.

Caveat (also in the README): the guarantee covers the decoder, and assumes each record's decoder
gradient depends on that record alone. The client's encoder, trained without privacy on all of
the client's records, computes the latent that feeds every decoder gradient, so strictly the
decoder's per-record gradients depend on the other records through the encoder. The encoders are
never released, but the formal (epsilon, delta) holds only if the encoder is treated as fixed.
The canary audit scores this generator by its decoder alone (decoder_fit_loss), never by the
encoders.
"""

from __future__ import annotations

import copy
import logging
from functools import partial

import numpy as np
import torch

from audit.config import FedConfig, RunConfig
from audit.errors import AuditError
from audit.seeding import numpy_rng, seeded_global_rng
from generators.accounting import DPRecord, rdp_epsilon, solve_noise, steps_within
from generators.base import Axis, GenerationRequest, SetKey, SyntheticSet, register
from generators.dp_sgd import Schedule, train_dp_sgd
from generators.vae import (
    ConditionalVAE,
    Decoder,
    Encoder,
    VAEGenerator,
    decoder_fit_loss,
    kl_divergence,
    private_data,
    reconstruction_loss,
    reparameterise,
    sample_release,
)

log = logging.getLogger(__name__)


def partition(
    labels: np.ndarray, clients: int, how: str, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Record indices per client: IID (a random equal split) or Dirichlet non-IID (each class's
    records divided among clients in Dirichlet(alpha) proportions). Clients left with fewer than
    2 records are dropped (DP-SGD needs a batch to sample from)."""
    n = len(labels)
    if how == "iid":
        parts = np.array_split(rng.permutation(n), clients)
    elif how == "dirichlet":
        buckets: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for bucket, chunk in zip(buckets, np.split(members, cuts), strict=True):
                bucket.extend(chunk.tolist())
        parts = [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
    else:
        raise AuditError(f"client partition must be iid or dirichlet, got {how!r}")
    kept = [np.asarray(p, dtype=np.int64) for p in parts if len(p) >= 2]
    if not kept:
        raise AuditError(f"no client holds 2 or more of the {n} private records")
    return kept


class ClientLoss:
    """A client's per-record negative ELBO through its own encoder (trained beside the decoder,
    without privacy) and the decoder that DP-SGD trains."""

    def __init__(self, encoder: Encoder, kl_weight: float) -> None:
        self.encoder, self.kl_weight = encoder, kl_weight

    def __call__(
        self, decoder: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        mu, logvar = self.encoder(x, y)
        z = reparameterise(mu, logvar, gen)
        return reconstruction_loss(decoder(z, y), x) + self.kl_weight * kl_divergence(mu, logvar)


class DPDfVAE(VAEGenerator):
    name = "dpd_fvae"
    axis: Axis = "epsilon"

    def __init__(self, fed: FedConfig, delta: float) -> None:
        self.fed, self.delta = fed, delta

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        sets: dict[SetKey, SyntheticSet] = {}
        for epsilon in request.epsilons:
            decoder, record, federation = self.train(request, epsilon)
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
            info = {**record.columns(), **federation}
            sets[epsilon] = SyntheticSet(images, labels, info, score_records=score)
            if request.on_set is not None:
                request.on_set(epsilon, sets[epsilon])
        return sets

    def noise_for(self, epsilon: float, parts: list[np.ndarray]) -> float:
        """The fixed noise multiplier if one is set (the public code's rule: clients stop when
        their budget is spent), else the noise that lets the client with the largest sample rate
        run its whole plan (rounds x local epochs, were it sampled every round) within epsilon."""
        fed = self.fed
        if fed.noise_multiplier is not None:
            return fed.noise_multiplier
        smallest = min(len(p) for p in parts)
        plan = Schedule.of(smallest, fed.batch_size, fed.rounds * fed.local_epochs)
        return solve_noise(epsilon, self.delta, plan.sample_rate, plan.steps)

    def train(
        self, request: GenerationRequest, epsilon: float
    ) -> tuple[Decoder, DPRecord, dict[str, int]]:
        """The trained shared decoder, its DP record and the federation's figures."""
        fed, data = self.fed, private_data(request)
        stream = f"{self.name}-eps{epsilon:g}"
        rng = numpy_rng(request.seed, stream, "clients")
        parts = partition(
            data.y.cpu().numpy(), fed.clients, fed.partition, fed.dirichlet_alpha, rng
        )
        shape = (request.channels, request.image_size, request.num_classes, fed.latent)
        with seeded_global_rng(request.seed, stream, "init"):
            server = ConditionalVAE(*shape).decoder.to(request.device)
            encoders = [Encoder(*shape).to(request.device) for _ in parts]
        encoder_opts = [torch.optim.Adam(e.parameters(), lr=fed.lr) for e in encoders]
        rates = [Schedule.of(len(p), fed.batch_size, 1).sample_rate for p in parts]
        noise = self.noise_for(epsilon, parts)
        budgets = [steps_within(epsilon, self.delta, noise, q) for q in rates]
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
                ran = train_dp_sgd(
                    local,
                    ClientLoss(encoders[c], fed.kl_weight),
                    data.x[idx],
                    data.y[idx],
                    noise_multiplier=noise,
                    clip=fed.clip,
                    batch_size=fed.batch_size,
                    epochs=fed.local_epochs,
                    lr=fed.lr,
                    seed=request.seed,
                    stream=f"{stream}-client{c}-round{round_index}",
                    max_steps=budgets[c] - spent[c],
                    companion=encoder_opts[c],
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
        client_eps = [
            rdp_epsilon([(noise, q, n)], self.delta) for q, n in zip(rates, spent, strict=True)
        ]
        worst = int(np.argmax(client_eps))
        record = DPRecord(epsilon, self.delta, ((noise, rates[worst], spent[worst]),))
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
                "sample rates (%.3g and up): the release is the untrained decoder. Give each "
                "client more records (fewer --clients) or a larger epsilon",
                stream,
                noise,
                epsilon,
                min(rates),
            )
        return server.eval(), record, {"dp_clients": len(parts), "fl_rounds": rounds_run}


@register("dpd_fvae")
def _factory(config: RunConfig) -> DPDfVAE:
    return DPDfVAE(config.fed, config.dp.delta)
