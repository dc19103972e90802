"""The run directory: every artifact written once, atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
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
    """Serialise an artifact as the run directory's JSON text (2-space indent, key order kept).

    Args:
        obj: JSON-able data; numpy scalars and arrays become numbers and lists, Paths strings;
            NaN and infinities are written as-is (allow_nan).

    Returns:
        The JSON text, ending with a newline.

    Raises:
        TypeError: obj holds a value of any other type that json cannot serialise.
    """
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically (temp file in the same folder, then rename).

    Args:
        path: the file to write; missing parent folders are created.
        text: its whole content.

    Returns:
        path, as a Path.
    """
    with _atomic(Path(path), "w") as handle:
        handle.write(text)
    return Path(path)


class RunDir:
    """Paths and atomic readers/writers for one run's directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # names written since the last reset (one stage's outputs) -> their sha256 once known
        self.written: dict[str, str | None] = {}
        # names read through this object: the engine checks them against what the task declared
        self.reads: set[str] = set()

    def path(self, name: str) -> Path:
        """The full path of an artifact (not counted among the reads).

        Args:
            name: the artifact's path relative to the run directory (audit/core/layout.py).

        Returns:
            root / name.
        """
        return self.root / name

    def _wrote(self, name: str) -> Path:
        self.written[name] = None  # (re)written: any earlier digest is stale
        return self.path(name)

    def mark_written(self, name: str, digest: str) -> None:
        """Count a file whose sha256 is known among the current stage's outputs (one reused from
        a cached row, or just hashed), so the stage's record need not hash it again.

        Args:
            name: the artifact's path relative to the run directory.
            digest: its sha256, as a hex string.
        """
        self.written[name] = digest

    def written_digests(self) -> dict[str, str]:
        """sha256 of every file written since the last reset, hashing only those not yet known.

        Returns:
            {name relative to the run directory: sha256 hex digest}, in the order written.
        """
        for name, digest in self.written.items():
            if digest is None:
                self.written[name] = file_sha256(self.path(name))
        return {name: digest for name, digest in self.written.items() if digest is not None}

    def write_text(self, name: str, text: str) -> Path:
        """Write a text artifact atomically and count it among the stage's outputs.

        Args:
            name: the artifact's path relative to the run directory.
            text: its whole content.

        Returns:
            The artifact's full path.
        """
        write_text_atomic(self.path(name), text)
        return self._wrote(name)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON artifact (to_json's format) atomically, counted among the outputs.

        Args:
            name: the artifact's path relative to the run directory.
            obj: JSON-able data (numpy scalars and arrays and Paths allowed, as in to_json).

        Returns:
            The artifact's full path.

        Raises:
            TypeError: obj holds a value to_json cannot serialise.
        """
        return self.write_text(name, to_json(obj))

    def read_json(self, name: str) -> Any:
        """A JSON artifact, parsed (counted among this object's reads).

        Args:
            name: the artifact's path relative to the run directory.

        Returns:
            The parsed JSON value.
        """
        self.reads.add(name)
        return json.loads(self.path(name).read_text())

    def read_path(self, name: str) -> Path:
        """The path of an artifact a reader opens itself (weights), counted among the reads.

        Args:
            name: the artifact's path relative to the run directory.

        Returns:
            The artifact's full path (the file is not checked to exist).
        """
        self.reads.add(name)
        return self.path(name)

    def write_npz(self, name: str, **arrays: np.ndarray) -> Path:
        """np.savez_compressed's format, but with fixed zip timestamps: the same arrays give the
        same bytes, so stage outputs can be compared and content-addressed by their hash.

        Args:
            name: the artifact's path relative to the run directory (ends in .npz).
            **arrays: the arrays to store, by key (any shape and dtype; no object arrays).

        Returns:
            The artifact's full path.
        """
        return self._write_npz(name, arrays, zipfile.ZIP_DEFLATED)

    def write_npz_uncompressed(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """As write_npz, stored: for float state that deflate would barely shrink, at disk speed.

        Args:
            name: the artifact's path relative to the run directory (ends in .npz).
            arrays: the arrays to store, by key (any shape and dtype; no object arrays).

        Returns:
            The artifact's full path.
        """
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
        """Every array of an .npz artifact (counted among this object's reads).

        Args:
            name: the artifact's path relative to the run directory.

        Returns:
            {key: array}, each loaded into memory (no pickled objects allowed).
        """
        self.reads.add(name)
        with np.load(self.path(name), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def write_state_dict(self, name: str, state: dict[str, torch.Tensor]) -> Path:
        """Save a model's weights (torch.save format) atomically, counted among the outputs.

        Args:
            name: the artifact's path relative to the run directory (ends in .pt).
            state: a module's state_dict; each tensor is detached and moved to the CPU first.

        Returns:
            The artifact's full path.
        """
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
        with _atomic(self.path(name)) as handle:
            handle.write(buffer.getvalue())
        return self._wrote(name)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks.

    Args:
        path: the file to hash.

    Returns:
        The digest as 64 lower-case hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
