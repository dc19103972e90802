"""Utility of a release: retrain from scratch on it, measure accuracy on real test data."""

from __future__ import annotations

import numpy as np

from audit.config import TrainConfig
from audit.models import NormalizedClassifier, build_model
from audit.training import train_classifier


def retrain(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    model_name: str,
    num_classes: int,
    cfg: TrainConfig,
    seed: int,
    stream: str,
    device: str,
) -> NormalizedClassifier:
    """A fresh model trained only on (images, labels) with the shared recipe."""
    model = build_model(
        model_name,
        channels=images.shape[3],
        num_classes=num_classes,
        seed=seed,
        stream=stream,
        image_size=images.shape[1],
    )
    return train_classifier(
        model, images, labels, cfg, seed=seed, stream=stream, device=device, desc=stream
    )
