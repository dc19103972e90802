"""The label-conditional convolutional VAE (encoder, decoder, the model) and its losses: what
every VAE generator trains, privately or not (generators/vae.py releases its samples)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.core.errors import AuditError
from audit.core.sections import VAEConfig
from audit.core.seeding import seeded_global_rng
from audit.core.training import to_tensor
from generators.base import GenerationRequest


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
        """The Gaussian posterior q(z | x, y) of each record, from its image and its label.

        Args:
            x: (N, C, H, W) float32 images, pixels in [0, 1], H = W = the image size.
            y: (N,) int64 labels in [0, num_classes).

        Returns:
            (mu, logvar), each (N, latent) float32: the posterior mean, and its log-variance
            clamped to [-10, 10].
        """
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
        """Logits of each pixel's Bernoulli mean (sigmoid gives the image in [0, 1]).

        Args:
            z: (N, latent) float32 latent codes.
            y: (N,) int64 labels in [0, num_classes).

        Returns:
            (N, C, H, W) float32 logits, unbounded (H = W = the image size).
        """
        h = self.dense(torch.cat([z, F.one_hot(y, self.num_classes).float()], dim=1))
        return self.up(h.view(len(z), 64, self.side, self.side))


def check_image_size(image_size: int) -> None:
    """Two stride-2 layers each way: the decoder only rebuilds sizes divisible by 4.

    Args:
        image_size: the images' side in pixels (square images).

    Raises:
        AuditError: image_size is not divisible by 4.
    """
    if image_size % 4:
        raise AuditError(
            f"the VAE generators need an image size divisible by 4, got {image_size} "
            "(pass --image-size)"
        )


class ConditionalVAE(nn.Module):
    def __init__(self, channels: int, image_size: int, num_classes: int, latent: int) -> None:
        super().__init__()
        check_image_size(image_size)
        self.encoder = Encoder(channels, image_size, num_classes, latent)
        self.decoder = Decoder(channels, image_size, num_classes, latent)
        self.latent = latent
        self.num_classes = num_classes


def build_vae(request: GenerationRequest, cfg: VAEConfig, *, stream: str) -> ConditionalVAE:
    """A freshly initialised VAE for the request's images, on its device (init seeded by stream).

    Args:
        request: the generation request (its channels, image size, classes, seed and device).
        cfg: the `vae` section (its latent size) or any section with a `latent` field.
        stream: the name the initialisation's seed is derived from, with the request's seed.

    Returns:
        The untrained model on request.device.

    Raises:
        AuditError: the request's image size is not divisible by 4.
    """
    with seeded_global_rng(request.seed, stream, "init"):
        model = ConditionalVAE(
            request.channels, request.image_size, request.num_classes, cfg.latent
        )
    return model.to(request.device)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per record: the Bernoulli negative log-likelihood summed over pixels, shape (N,).

    Args:
        logits: (N, C, H, W) float decoder logits, unbounded.
        x: (N, C, H, W) float target images, pixels in [0, 1].

    Returns:
        (N,) float, each record's loss in nats, >= 0.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per record: KL(N(mu, exp(logvar)) || N(0, I)), shape (N,).

    Args:
        mu: (N, latent) float posterior means.
        logvar: (N, latent) float posterior log-variances.

    Returns:
        (N,) float, each record's KL divergence in nats, >= 0.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def reparameterise(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """A latent drawn from each record's posterior, z = mu + eps x std (the reparameterisation
    trick, so the gradient flows through mu and logvar).

    Args:
        mu: (N, latent) float posterior means.
        logvar: (N, latent) float posterior log-variances.
        generator: draws eps ~ N(0, I), on mu's device; None: torch's global RNG.

    Returns:
        (N, latent) float latent codes.
    """
    eps = torch.randn(mu.shape, generator=generator, device=mu.device)
    return mu + eps * (0.5 * logvar).exp()


def per_record_loss(
    model: ConditionalVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    kl_weight: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The negative ELBO of each record (kl_weight scales the KL term), shape (N,).

    Args:
        model: the VAE whose encoder and decoder are run.
        x: (N, C, H, W) float images, pixels in [0, 1].
        y: (N,) int64 labels in [0, num_classes).
        kl_weight: the KL term's weight, >= 0 (1.0: the plain ELBO).
        generator: draws the latent's noise; None: torch's global RNG.

    Returns:
        (N,) float, each record's loss in nats (no mean over the batch).
    """
    mu, logvar = model.encoder(x, y)
    z = reparameterise(mu, logvar, generator)
    return reconstruction_loss(model.decoder(z, y), x) + kl_weight * kl_divergence(mu, logvar)


@torch.no_grad()
def negative_elbo(
    model: ConditionalVAE, images: np.ndarray, labels: np.ndarray, *, device: str
) -> np.ndarray:
    """A white-box membership score for each (image, label): the negative ELBO at the posterior
    mean (lower = better explained = more likely trained on). Uses encoder and decoder, so it is
    post-processing of a DP release only where both were trained with DP-SGD.

    Args:
        model: the trained VAE (moved to device and put in eval mode).
        images: (N, H, W, C) uint8 images, pixels in [0, 255].
        labels: (N,) int labels in [0, num_classes).
        device: the torch device to score on ("cpu", "cuda"...).

    Returns:
        (N,) float64 negative ELBO (KL weight 1) in nats; lower = more likely a member.
    """
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
    the prior's ||z||^2 / 2. Lower = better explained.

    Args:
        decoder: the trained decoder (moved to device and put in eval mode; its parameters
            are left with requires_grad True).
        images: (N, H, W, C) uint8 images, pixels in [0, 255].
        labels: (N,) int labels in [0, num_classes).
        latent: the decoder's latent size, >= 1.
        steps: Adam steps (lr 0.05) on the latents, >= 0.
        device: the torch device to score on ("cpu", "cuda"...).

    Returns:
        (N,) float64 scores in nats; lower = more likely a member.
    """
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
