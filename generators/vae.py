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

from audit.core.accounting import DP_RECORD_COLUMNS
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.sections import VAEConfig
from audit.core.seeding import torch_generator
from audit.core.training import to_tensor
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.vae_model import (
    ConditionalVAE,
    Decoder,
    build_vae,
    check_image_size,
    negative_elbo,
    per_record_loss,
)

log = logging.getLogger(__name__)


class VAEGenerator:
    """What the VAE generators share (their input check is `check_vae`)."""


def check_vae(config: RunConfig, channels: int, image_size: int) -> None:
    """The VAEs' input check, run before anything is written.

    Args:
        config: the run's config (not read: the VAEs check the image size alone).
        channels: image channels, 1 or 3 (not read).
        image_size: the images' side in pixels.

    Raises:
        AuditError: image_size is not divisible by 4.
    """
    check_image_size(image_size)


# from the default digits run on the reference 2-core CPU: the DP-VAE took 13.6 s for 30 epochs
IMAGE_EPOCH_S = 7.2e-4  # per private record and epoch at 16x16 px (DP-SGD included)


def vae_seconds(config: RunConfig, members: int) -> float:
    """The non-private VAE: vae.epochs passes over the members.

    Args:
        config: the run's config (its `vae` section's epochs).
        members: the number of private records trained on, >= 0.

    Returns:
        Estimated seconds on the reference 2-core CPU at 16x16 px, >= 0.
    """
    return IMAGE_EPOCH_S * config.vae.epochs * members


def dp_vae_seconds(config: RunConfig, members: int) -> float:
    """A DP-VAE: one training per target epsilon.

    Args:
        config: the run's config (its `vae` section's epochs and its target epsilons).
        members: the number of private records trained on, >= 0.

    Returns:
        Estimated seconds on the reference 2-core CPU at 16x16 px, >= 0.
    """
    return vae_seconds(config, members) * len(config.epsilon)


@torch.no_grad()
def sample_release(
    decoder: Decoder, n_images: int, num_classes: int, *, latent: int, seed: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """n_images drawn with z ~ N(0, I) and balanced labels (class i gets n // classes, the first
    n % classes classes one more), as uint8 NHWC, the way BN matching assigns labels.

    Args:
        decoder: the trained decoder (moved to device and put in eval mode).
        n_images: the number of images to draw, >= 0.
        num_classes: the number of classes, >= 1.
        latent: the decoder's latent size, >= 1.
        seed: the run seed the latents' generator is derived from (stream "release").
        device: the torch device to sample on ("cpu", "cuda"...).

    Returns:
        (images, labels): (n_images, H, W, C) uint8 images, pixels in [0, 255], and
        (n_images,) int64 labels i % num_classes.
    """
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
    ELBO: post-processing of the model, so covered by whatever guarantee its training has).

    Args:
        model: the trained VAE.
        request: the generation request (its n_images, classes, seed and device).
        info: the release row's columns (e.g. the DP record's), stored as the set's info.

    Returns:
        The release: uint8 NHWC images, int64 balanced labels, info, and `negative_elbo` on
        the model as its score_records.
    """
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
        """The records as tensors on the device, checked to be enough to train on.

        Args:
            images: (N, H, W, C) uint8 private images, pixels in [0, 255].
            labels: (N,) int labels in [0, num_classes).
            device: the torch device to hold them on ("cpu", "cuda"...).

        Returns:
            x as (N, C, H, W) float32 in [0, 1] and y as (N,) integer labels, on device.

        Raises:
            AuditError: fewer than 2 records.
        """
        if len(images) < 2:
            raise AuditError(f"a VAE needs at least 2 private records, got {len(images)}")
        return cls(to_tensor(images, device), torch.as_tensor(labels, device=device))


def private_data(request: GenerationRequest) -> TrainingData:
    """The request's private records (the members) as training tensors on its device.

    Args:
        request: the generation request (its private_images, private_labels and device).

    Returns:
        The members as (N, C, H, W) float32 images in [0, 1] and (N,) labels.

    Raises:
        AuditError: the request carries no private records, or fewer than 2.
    """
    if request.private_images is None or request.private_labels is None:
        raise AuditError("the VAE generators need the private records (members)")
    return TrainingData.of(request.private_images, request.private_labels, request.device)


def train_nonprivate(
    model: ConditionalVAE, data: TrainingData, cfg: VAEConfig, *, seed: int, device: str
) -> ConditionalVAE:
    """Plain Adam on shuffled minibatches: the ablation's training, with no clipping or noise.

    Args:
        model: the VAE to train (in place, moved to device).
        data: the private records, on device.
        cfg: the `vae` section (lr, epochs, batch_size, kl_weight).
        seed: the run seed the shuffling and latent noise are derived from.
        device: the torch device to train on ("cpu", "cuda"...).

    Returns:
        The same model, trained and in eval mode.
    """
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

    def __init__(self, vae: VAEConfig) -> None:
        self.vae = vae

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """Train the VAE on the members without DP and sample one release from it.

        Args:
            request: the generation request (its private records, n_images, seed, device).

        Returns:
            {None: the release}, its info only {"dp_private": False}.

        Raises:
            AuditError: no private records, fewer than 2, or an image size not divisible by 4.
        """
        cfg = self.vae
        data = private_data(request)
        model = build_vae(request, cfg, stream="vae")
        train_nonprivate(model, data, cfg, seed=request.seed, device=request.device)
        return {None: release_of(model, request, {"dp_private": False})}


PLUGIN = GeneratorPlugin(
    "vae",
    axis=None,
    build=lambda config: NonPrivateVAE(config.vae),
    settings=("vae",),
    cost=vae_seconds,
    columns=DP_RECORD_COLUMNS[:1],  # dp_private: false
    summary="the DP-VAE trained without privacy: an ablation, NOT PRIVATE",
    check=check_vae,
)
