"""The label-conditional convolutional VAE every DP generator trains, and its non-private ablation.

The architecture follows DPD-fVAE's public code (docs/references.md): encoder Conv32-Conv64
with stride 2, decoder dense -> ConvT64 -> ConvT32 -> channels with a sigmoid, the label given to
both as a one-hot vector. GroupNorm, never BatchNorm: DP-SGD needs every record's gradient to
depend on that record alone, and the loss is strictly per record (summed Bernoulli
log-likelihood over pixels + kl_weight x KL), with no batch-wide term.

`vae` (registered here) trains the same model without differential privacy. It is the ablation
that shows what the noise costs, and is NOT PRIVATE: its rows carry no epsilon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.core.accounting import DP_RECORD_COLUMNS
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.sections import VAEConfig
from audit.core.seeding import seeded_global_rng, torch_generator
from audit.core.training import to_tensor
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet

log = logging.getLogger(__name__)


def _groups(channels: int) -> int:
    return min(8, channels)


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, num_classes: int, latent: int) -> None:
        super().__init__()
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1),
            nn.GroupNorm(_groups(32), 32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.GroupNorm(_groups(64), 64),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(64 * side * side + num_classes, 2 * latent)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.features(x), F.one_hot(y, self.num_classes).float()], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class Decoder(nn.Module):
    def __init__(self, channels: int, image_size: int, num_classes: int, latent: int) -> None:
        super().__init__()
        self.side = image_size // 4
        self.dense = nn.Sequential(nn.Linear(latent + num_classes, 64 * self.side**2), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.GroupNorm(_groups(32), 32),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )
        self.num_classes = num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits of each pixel's Bernoulli mean (sigmoid gives the image in [0, 1])."""
        h = self.dense(torch.cat([z, F.one_hot(y, self.num_classes).float()], dim=1))
        return self.up(h.view(len(z), 64, self.side, self.side))


def check_image_size(image_size: int) -> None:
    """Two stride-2 layers each way: the decoder only rebuilds sizes divisible by 4."""
    if image_size % 4:
        raise AuditError(
            f"the VAE generators need an image size divisible by 4, got {image_size} "
            "(pass --image-size)"
        )


class VAEGenerator:
    """What the VAE generators share (their input check is `check_vae`)."""


def check_vae(config: RunConfig, channels: int, image_size: int) -> None:
    """The VAEs' input check, run before anything is written."""
    check_image_size(image_size)


# from the default digits run on the reference 2-core CPU: the DP-VAE took 13.6 s for 30 epochs
IMAGE_EPOCH_S = 7.2e-4  # per private record and epoch at 16x16 px (DP-SGD included)


def vae_seconds(config: RunConfig, members: int) -> float:
    """The non-private VAE: vae.epochs passes over the members."""
    return IMAGE_EPOCH_S * config.vae.epochs * members


def dp_vae_seconds(config: RunConfig, members: int) -> float:
    """A DP-VAE: one training per target epsilon."""
    return vae_seconds(config, members) * len(config.epsilon)


class ConditionalVAE(nn.Module):
    def __init__(self, channels: int, image_size: int, num_classes: int, latent: int) -> None:
        super().__init__()
        check_image_size(image_size)
        self.encoder = Encoder(channels, image_size, num_classes, latent)
        self.decoder = Decoder(channels, image_size, num_classes, latent)
        self.latent = latent
        self.num_classes = num_classes


def build_vae(request: GenerationRequest, cfg: VAEConfig, *, stream: str) -> ConditionalVAE:
    """A freshly initialised VAE for the request's images, on its device (init seeded by stream)."""
    with seeded_global_rng(request.seed, stream, "init"):
        model = ConditionalVAE(
            request.channels, request.image_size, request.num_classes, cfg.latent
        )
    return model.to(request.device)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per record: the Bernoulli negative log-likelihood summed over pixels, shape (N,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per record: KL(N(mu, exp(logvar)) || N(0, I)), shape (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def reparameterise(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device)
    return mu + eps * (0.5 * logvar).exp()


def per_record_loss(
    model: ConditionalVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    kl_weight: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The negative ELBO of each record (kl_weight scales the KL term), shape (N,)."""
    mu, logvar = model.encoder(x, y)
    z = reparameterise(mu, logvar, generator)
    return reconstruction_loss(model.decoder(z, y), x) + kl_weight * kl_divergence(mu, logvar)


@torch.no_grad()
def negative_elbo(
    model: ConditionalVAE, images: np.ndarray, labels: np.ndarray, *, device: str
) -> np.ndarray:
    """A white-box membership score for each (image, label): the negative ELBO at the posterior
    mean (lower = better explained = more likely trained on). Uses encoder and decoder, so it is
    post-processing of a DP release only where both were trained with DP-SGD."""
    model = model.to(device).eval()
    x = to_tensor(images, device)
    y = torch.as_tensor(labels, device=device)
    mu, logvar = model.encoder(x, y)
    loss = reconstruction_loss(model.decoder(mu, y), x) + kl_divergence(mu, logvar)
    return loss.cpu().numpy().astype(np.float64)


def decoder_fit_loss(
    decoder: Decoder,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    latent: int,
    steps: int = 100,
    device: str,
) -> np.ndarray:
    """A white-box score that needs the decoder alone (DPD-fVAE releases nothing else): the
    reconstruction loss of each (image, label) at the best latent Adam finds from z = 0, plus
    the prior's ||z||^2 / 2. Lower = better explained."""
    decoder = decoder.to(device).eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    x = to_tensor(images, device)
    y = torch.as_tensor(labels, device=device)
    z = torch.zeros(len(x), latent, device=device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = reconstruction_loss(decoder(z, y), x) + 0.5 * z.pow(2).sum(1)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        final = reconstruction_loss(decoder(z, y), x) + 0.5 * z.pow(2).sum(1)
    for p in decoder.parameters():
        p.requires_grad_(True)
    return final.cpu().numpy().astype(np.float64)


@torch.no_grad()
def sample_release(
    decoder: Decoder, n_images: int, num_classes: int, *, latent: int, seed: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """n_images drawn with z ~ N(0, I) and balanced labels (class i gets n // classes, the first
    n % classes classes one more), as uint8 NHWC, the way BN matching assigns labels."""
    decoder = decoder.to(device).eval()
    labels = np.arange(n_images) % num_classes
    generator = torch_generator(seed, "release", device=device)
    z = torch.randn(n_images, latent, generator=generator, device=device)
    y = torch.as_tensor(labels, device=device)
    images = torch.sigmoid(decoder(z, y))
    as_uint8 = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return as_uint8.cpu().numpy(), labels.astype(np.int64)


def release_of(
    model: ConditionalVAE, request: GenerationRequest, info: dict[str, Any]
) -> SyntheticSet:
    """The request's release sampled from a trained VAE, with its white-box score (the negative
    ELBO: post-processing of the model, so covered by whatever guarantee its training has)."""
    images, labels = sample_release(
        model.decoder,
        request.n_images,
        request.num_classes,
        latent=model.latent,
        seed=request.seed,
        device=request.device,
    )
    score = partial(negative_elbo, model, device=request.device)
    return SyntheticSet(images, labels, info, score_records=score)


@dataclass(frozen=True)
class TrainingData:
    """The private records a generator trains on, as float NCHW tensors on the device."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray, device: str) -> TrainingData:
        if len(images) < 2:
            raise AuditError(f"a VAE needs at least 2 private records, got {len(images)}")
        return cls(to_tensor(images, device), torch.as_tensor(labels, device=device))


def private_data(request: GenerationRequest) -> TrainingData:
    if request.private_images is None or request.private_labels is None:
        raise AuditError("the VAE generators need the private records (members)")
    return TrainingData.of(request.private_images, request.private_labels, request.device)


def train_nonprivate(
    model: ConditionalVAE, data: TrainingData, cfg: VAEConfig, *, seed: int, device: str
) -> ConditionalVAE:
    """Plain Adam on shuffled minibatches: the ablation's training, with no clipping or noise."""
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch_generator(seed, "vae", "train", device=device)
    n = len(data.x)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator, device=device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = per_record_loss(model, data.x[idx], data.y[idx], cfg.kl_weight, generator)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    return model.eval()


class NonPrivateVAE(VAEGenerator):
    """The ablation: the DP-VAE's model and loss trained without DP. NOT PRIVATE."""

    name = "vae"

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        cfg = self.config.vae
        data = private_data(request)
        model = build_vae(request, cfg, stream="vae")
        train_nonprivate(model, data, cfg, seed=request.seed, device=request.device)
        return {None: release_of(model, request, {"dp_private": False})}


PLUGIN = GeneratorPlugin(
    "vae",
    axis=None,
    build=NonPrivateVAE,
    settings=("vae",),
    cost=vae_seconds,
    columns=DP_RECORD_COLUMNS[:1],  # dp_private: false
    check=check_vae,
)
