"""What device_check.py's sections share: recording, timing, peak GPU memory, the CIFAR-10
archive."""

from __future__ import annotations

import contextlib
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from audit.core.store import to_json, write_text_atomic

REPO = Path(__file__).resolve().parents[1]


class Recorder:
    """The JSON document, rewritten atomically after every section."""

    def __init__(self, out: Path, document: dict[str, Any]) -> None:
        self.path = out / RESULT
        self.document = document
        self.document["sections"] = {}
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, to_json(self.document))

    def section(self, name: str, record: dict[str, Any]) -> None:
        self.document["sections"][name] = record
        self.save()


@contextlib.contextmanager
def peak_memory(device: str, record: dict[str, Any]) -> Iterator[None]:
    """record["peak_gpu_mb"]: the most GPU memory allocated inside the block (None on a CPU)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize()
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            record["peak_gpu_mb"] = None


def timed(sync: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn(*args, **kwargs) and its seconds, the queue of device `sync` drained."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    if sync.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def find_archive(given: str | None) -> Path | None:
    if given:
        return Path(given)
    return next((p for p in ARCHIVES if p.exists()), None)


def cifar_folder(source: Path, scratch: Path) -> Path:
    """The JPEG folder (train/<class>/*.jpg, test/...): source itself, or the archive unpacked."""
    if source.is_dir():
        return source
    target = scratch / "cifar10-jpeg"
    with tarfile.open(source) as tar:
        tar.extractall(target, filter="data")
    return target


def measured(
    device: str, settings: dict[str, Any], measure: Callable[..., dict[str, float]], *args: Any
) -> dict[str, Any]:
    """settings, plus what measure(*args) returns, plus the peak GPU memory it took."""
    record = dict(settings)
    with peak_memory(device, record):
        record.update(measure(*args))
    return record


ARCHIVES = (  # where the CIFAR-10 JPEG archive is looked for, first found wins
    REPO / "bench" / "data" / "cifar10-jpeg.tar.gz",  # ignored by git: carried to a device
    REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
)


RESULT = "device_check.json"
