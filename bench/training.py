"""Side-by-side: the suite's training loop against a plain DataLoader + torchvision transforms loop.

Same model (pytorchcv ResNet20), same images, epochs, batch size, optimiser and learning-rate
schedule, same device, one run. The suite's loop (audit/core/training.py) keeps the data on the
device and augments whole batches there; the plain loop is the textbook one: a Dataset of PIL
images, per-image RandomCrop(padding) + RandomHorizontalFlip + ToTensor + Normalize in the
DataLoader, batches copied to the device each step. Prints images/s for both; the last line is the
ratio (`speedup: training loop 1.4x`). Issue 7's target on a GPU is at least 3x.

    python bench/training.py                               # CPU, 2,048 images, 2 epochs
    python bench/training.py --n 20000 --epochs 3 --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from audit.core.models import build_model
from audit.core.sections import TrainConfig
from audit.core.training import train_classifier


class PILImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_loop(
    images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, device: str, workers: int
) -> None:
    mean = images.reshape(-1, 3).mean(0) / 255
    std = images.reshape(-1, 3).std(0) / 255
    augment = transforms.Compose(
        [
            transforms.RandomCrop(images.shape[1], padding=cfg.crop_padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean.tolist(), std.tolist()),
        ]
    )
    loader = DataLoader(
        PILImages(images, labels, augment),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device == "cuda",
        drop_last=False,
    )
    model = build_model("resnet20_cifar10", channels=3, num_classes=10, seed=0).net.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    total = cfg.epochs * math.ceil(len(images) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    model.train()
    for _ in range(cfg.epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(
    n: int, epochs: int, batch_size: int, workers: int, device: str, size: int = 32
) -> dict[str, float]:
    """Training images/s of the suite's loop and of the plain loop on n random images, and their
    ratio."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, crop_padding=4, hflip=True)

    def suite() -> None:
        model = build_model("resnet20_cifar10", channels=3, num_classes=10, seed=0)
        train_classifier(
            model, images, labels, cfg, seed=0, stream="bench", device=device, desc="bench"
        )

    def plain() -> None:
        plain_loop(images, labels, cfg, device, workers)

    # warm-up (allocator, cuDNN autotuning) on a few batches of each, not timed
    small = TrainConfig(epochs=1, batch_size=batch_size, crop_padding=4, hflip=True)
    plain_loop(images[: 2 * batch_size], labels[: 2 * batch_size], small, device, 0)
    seen = n * epochs
    suite_s, plain_s = timed(suite), timed(plain)
    return {
        "suite_images_per_s": seen / suite_s,
        "plain_images_per_s": seen / plain_s,
        "suite_s": suite_s,
        "plain_s": plain_s,
        "speedup": plain_s / suite_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="training images (random, 32x32x3)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (plain loop)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    m = measure(args.n, args.epochs, args.batch_size, args.workers, args.device)
    print(
        f"suite loop: {m['suite_s']:.2f} s, {m['suite_images_per_s']:.0f} images/s ({args.device})"
    )
    print(
        f"DataLoader + torchvision: {m['plain_s']:.2f} s, {m['plain_images_per_s']:.0f} images/s "
        f"({args.device})"
    )
    print(f"speedup: training loop {m['speedup']:.2f}x")


if __name__ == "__main__":
    main()
