"""Feature inversion: an attacker who sees a classifier's (noisy) penultimate features trains a
decoder on images it holds and reconstructs private members from their features.

The defence is Gaussian noise of scale x RMS(clean member features) on the features; the attacker
knows the scale and trains on equally noisy features. For each scale we report the
reconstructions' SSIM and PSNR against the true members, their error per DCT coefficient of the
normalised image (comparable with the HCR bound at that scale) and the classifier's accuracy on
noisy test features (the price of the defence).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import piq
import torch
import torch.nn.functional as F
from torch import nn

from attacks.penultimate import split_classifier, to_dct
from attacks.release import penultimate_features
from audit.core.models import NormalizedClassifier
from audit.core.seeding import seeded_global_rng, torch_generator
from audit.core.training import to_tensor


class Decoder(nn.Module):
    """features -> image in [0, 1]: a two-layer MLP. Convolutional decoders reconstruct sharper
    CIFAR images but cost seconds per step on a CPU; at 16 px the MLP is as good (digits)."""

    def __init__(self, in_features: int, channels: int, image_size: int, width: int = 256) -> None:
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, channels * image_size * image_size),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Decode features into images.

        Args:
            features: (N, in_features) float, (noisy) penultimate features.

        Returns:
            (N, channels, image_size, image_size) float, pixels in (0, 1) (a sigmoid).
        """
        return torch.sigmoid(self.mlp(features)).view(-1, *self.shape)


def feature_inversion(
    model: NormalizedClassifier,
    *,
    attacker_images: np.ndarray,
    victims: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    scales: tuple[float, ...],
    steps: int,
    seed: int,
    stream: str,
    device: str,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Per noise scale: reconstructions of the victims and how good they are.

    Args:
        model: the classifier whose penultimate features are released (input in [0, 1]).
        attacker_images: (A, H, W, C) uint8 images the attacker holds and trains the decoder
            on, pixels in [0, 255].
        victims: (V, H, W, C) uint8 members to reconstruct from their features, H == W; their
            clean features' RMS sets the noise unit.
        eval_images: (E, H, W, C) uint8 test images for the accuracy on noisy features.
        eval_labels: (E,) int64 numpy, their classes.
        scales: noise stds as multiples of the RMS of the victims' clean features, each >= 0.
        steps: decoder Adam steps per scale, >= 1.
        seed: the run's seed; with stream, seeds the noise, the decoder and the batch order.
        stream: the random-stream name; each scale draws from f"{stream}-scale{scale}".
        device: torch device to train and evaluate on.
        batch_size: attacker images per decoder step, >= 1.

    Returns:
        "feature_rms": the victims' clean-feature RMS (float, feature units); "scales": one
        dict per scale with scale, sigma (feature units), ssim_mean, psnr_mean (dB),
        coefficient_rmse_median (normalised-image units per DCT coefficient),
        accuracy_on_noisy_features (in [0, 1]) and decoder_train_mse (last step's loss);
        "reconstructions": scale -> (V, H, W, C) uint8 CPU torch tensor, pixels in [0, 255].
    """
    _, head = split_classifier(model)
    attacker_x = to_tensor(attacker_images, device)
    victim_x = to_tensor(victims, device)
    attacker_f, victim_f, eval_f = (
        penultimate_features(model, images, device=device).to(device)
        for images in (attacker_images, victims, eval_images)
    )
    rms = float(victim_f.pow(2).mean().sqrt())
    eval_y = torch.from_numpy(eval_labels).to(device)
    per_scale = []
    reconstructions = {}
    for scale in scales:
        sigma = scale * rms
        name = f"{stream}-scale{scale}"
        noise = torch_generator(seed, name, "noise", device=device)
        with seeded_global_rng(seed, name, "decoder"):
            decoder = Decoder(victim_f.shape[1], victims.shape[3], victims.shape[1]).to(device)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-3)
        order = torch_generator(seed, name, "order")
        for _step in range(steps):
            idx = torch.randperm(len(attacker_x), generator=order)[:batch_size].to(device)
            f = attacker_f[idx]
            f = f + sigma * torch.randn(f.shape, generator=noise, device=device)
            loss = F.mse_loss(decoder(f), attacker_x[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            seen = victim_f + sigma * torch.randn(victim_f.shape, generator=noise, device=device)
            recon = decoder(seen).clamp(0, 1)
            ssim = piq.ssim(recon, victim_x, data_range=1.0, reduction="none")
            psnr = piq.psnr(recon, victim_x, data_range=1.0, reduction="none")
            # error of the normalised image per DCT coefficient, RMS over the victims
            error = to_dct((recon - victim_x) / model.std)
            coefficient_rmse = error.pow(2).mean(dim=0).sqrt().flatten()
            noisy_eval = eval_f + sigma * torch.randn(eval_f.shape, generator=noise, device=device)
            accuracy = float((head(noisy_eval).argmax(1) == eval_y).float().mean())
        per_scale.append(
            {
                "scale": scale,
                "sigma": sigma,
                "ssim_mean": float(ssim.mean()),
                "psnr_mean": float(psnr.mean()),
                "coefficient_rmse_median": float(coefficient_rmse.median()),
                "accuracy_on_noisy_features": accuracy,
                "decoder_train_mse": float(loss.detach()),
            }
        )
        reconstructions[scale] = (recon * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    return {"feature_rms": rms, "scales": per_scale, "reconstructions": reconstructions}
