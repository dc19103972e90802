"""The run directory: every artifact written once, atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def _atomic(path: Path, mode: str = "wb") -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n"


def write_text_atomic(path: str | Path, text: str) -> Path:
    with _atomic(Path(path), "w") as handle:
        handle.write(text)
    return Path(path)


class RunDir:
    """Paths and atomic readers/writers for one run's directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # names written since the last reset (one stage's outputs) -> their sha256 once known
        self.written: dict[str, str | None] = {}

    def path(self, name: str) -> Path:
        return self.root / name

    def _wrote(self, name: str) -> Path:
        self.written[name] = None  # (re)written: any earlier digest is stale
        return self.path(name)

    def mark_written(self, name: str, digest: str) -> None:
        """Count a file whose sha256 is known among the current stage's outputs (one reused from
        a cached row, or just hashed), so the stage's record need not hash it again."""
        self.written[name] = digest

    def written_digests(self) -> dict[str, str]:
        """sha256 of every file written since the last reset, hashing only those not yet known."""
        for name, digest in self.written.items():
            if digest is None:
                self.written[name] = file_sha256(self.path(name))
        return {name: digest for name, digest in self.written.items() if digest is not None}

    def write_text(self, name: str, text: str) -> Path:
        write_text_atomic(self.path(name), text)
        return self._wrote(name)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, to_json(obj))

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())

    def write_npz(self, name: str, **arrays: np.ndarray) -> Path:
        """np.savez_compressed's format, but with fixed zip timestamps: the same arrays give the
        same bytes, so stage outputs can be compared and content-addressed by their hash."""
        return self._write_npz(name, arrays, zipfile.ZIP_DEFLATED)

    def write_npz_uncompressed(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """As write_npz, stored: for float state that deflate would barely shrink, at disk speed."""
        return self._write_npz(name, arrays, zipfile.ZIP_STORED)

    def _write_npz(self, name: str, arrays: dict[str, np.ndarray], method: int) -> Path:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=method) as archive:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
        with _atomic(self.path(name)) as handle:
            handle.write(buffer.getvalue())
        return self._wrote(name)

    def read_npz(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path(name), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def write_state_dict(self, name: str, state: dict[str, torch.Tensor]) -> Path:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
        with _atomic(self.path(name)) as handle:
            handle.write(buffer.getvalue())
        return self._wrote(name)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _setting(k: int | None, epsilon: float | None) -> str | None:
    if k is not None:
        return f"k{k}"
    return None if epsilon is None else f"eps{epsilon:g}"


def row_name(generator: str, k: int | None, epsilon: float | None = None) -> str:
    """The key of a results row in every stage's output: "bn_match-k200" (a K), "dp_vae-eps10"
    (a DP generator's target epsilon), or "real" (neither)."""
    setting = _setting(k, epsilon)
    return generator if setting is None else f"{generator}-{setting}"


def row_of(entry: Mapping[str, Any]) -> str:
    """row_name of a release entry or results row (its generator, k and epsilon fields)."""
    return row_name(entry["generator"], entry.get("k"), entry.get("epsilon"))


def synthetic_name(generator: str, k: int | None, epsilon: float | None = None) -> str:
    """bn_match keeps the documented DIR/synthetic/k{K}.npz; other generators are prefixed."""
    suffix = _setting(k, epsilon) or "set"
    return (
        f"synthetic/{suffix}.npz"
        if generator == "bn_match"
        else f"synthetic/{generator}-{suffix}.npz"
    )


def mia_scores_name(family: str, row: str) -> str:
    """Per-candidate scores of one attack family on one row: mia/release-<row>.npz (attacks on
    the released images) or mia/model-<row>.npz (attacks on a classifier)."""
    prefix = "release" if family == "mia_release" else "model"
    return f"mia/{prefix}-{row}.npz"
