"""Shared fixtures: real digits, a real (tiny) pytorchcv ResNet20 teacher, real files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.core.data import ImageDataset, load_dataset
from audit.core.models import NormalizedClassifier, build_model
from audit.core.sections import TrainConfig
from audit.core.training import train_classifier

torch.set_num_threads(2)

SMOKE = ["run", "--preset", "smoke", "--device", "cpu"]
# the shared run exercises the reference pipelines too: 4, the fewest with which every record
# has 2 IN and 2 OUT models (online LiRA fits a variance to each)
# epsilon 0.1: DP-SGD with huge noise, whose release no attack should tell from chance
WITH_REFS = [*SMOKE, "--mia-refs", "4", "--epsilon", "0.1"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One serial smoke run with reference pipelines, shared by the CLI and executor tests."""
    from audit.cli import main

    out = tmp_path_factory.mktemp("runs") / "a"
    assert main([*WITH_REFS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits", None, image_size=16)


@pytest.fixture(scope="session")
def teacher(digits: ImageDataset) -> NormalizedClassifier:
    """ResNet20 trained for 2 epochs on 300 digits: real running statistics, in seconds."""
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    images, labels = digits.images[:300], digits.labels[:300]
    train_classifier(model, images, labels, TrainConfig(epochs=2), seed=0, stream="t", device="cpu")
    return model.eval()


def fit_on(
    model: NormalizedClassifier,
    digits: ImageDataset,
    indices: np.ndarray,
    recipe: TrainConfig,
    *,
    stream: str,
) -> NormalizedClassifier:
    """Train model on the digits at indices (seed 0, CPU): the memorising models tests plant."""
    images, labels = digits.images[indices], digits.labels[indices]
    train_classifier(model, images, labels, recipe, seed=0, stream=stream, device="cpu")
    return model


def one_per_class(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """The index of the first image of each class."""
    return np.array([np.flatnonzero(labels == c)[0] for c in range(classes)])


def random_images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory):
    """A small real image folder: JPEGs of 3 CIFAR-10 classes from the shared archive."""
    import tarfile
    from pathlib import Path

    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip("shared/data/cifar10-jpeg.tar.gz is not beside the repository")
    wanted = {
        f"{part}/{c}/{i:04d}.jpg"
        for part, n in (("train", 40), ("test", 10))
        for c in ("cat", "ship", "truck")
        for i in range(n)
    }
    root = tmp_path_factory.mktemp("cifar-jpeg")
    with tarfile.open(archive) as tar:
        tar.extractall(root, members=[m for m in tar if m.name in wanted], filter="data")
    return root
