"""What produced a run: package versions, platform and device."""

from __future__ import annotations

import functools
import hashlib
import importlib
import platform
import sys
from importlib import metadata
from pathlib import Path

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
    """The installed versions of the packages a run's results depend on, for the record.

    Returns:
        Each name of PACKAGES mapped to its installed version string, None when not installed.
    """
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


SOURCE_PACKAGES = ("audit", "attacks", "generators", "reports")
SOURCE_SUFFIXES = (".py", ".html", ".toml")


def package_dirs() -> tuple[Path, ...]:
    """Where this suite's packages are installed (the checkout, under an editable install).

    Returns:
        The directory of each package of SOURCE_PACKAGES (audit, attacks, generators, reports),
        in that order.
    """
    dirs = []
    for name in SOURCE_PACKAGES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        dirs.append(Path(module.__file__).parent)
    return tuple(dirs)


def source_digest(roots: tuple[Path, ...] | None = None) -> str:
    """sha256 of the suite's source files (code, report template, default thresholds), so that
    an edit under an editable install, with the same version number, recomputes the stages.

    Args:
        roots: the package directories to hash; None (or empty): `package_dirs()`. Cached per
            roots for the life of the process.

    Returns:
        The 64-character hex SHA-256 of the .py, .html and .toml files' paths and contents.
    """
    return _digest(roots or package_dirs())


@functools.cache
def _digest(roots: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def environment() -> dict[str, object]:
    """What produced a run: Python, platform, torch threads, GPU, package versions, source hash.

    Returns:
        A dict with keys python, platform, torch_threads, cuda_available, cuda_device (None
        without CUDA), packages (see package_versions) and synthaudit_source_sha256.
    """
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": package_versions(),
        "synthaudit_source_sha256": source_digest(),
    }
