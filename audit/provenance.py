"""What produced a run: package versions, platform and device."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import torch

PACKAGES = (
    "synthaudit",
    "torch",
    "torchvision",
    "pytorchcv",
    "piq",
    "numpy",
    "scikit-learn",
    "scipy",
    "scikit-image",
    "pandas",
    "jinja2",
    "matplotlib",
    "pillow",
    "tqdm",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, object]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": package_versions(),
    }
