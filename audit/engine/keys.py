"""Resumable stages: each stage's outputs are keyed by what they depend on and checked on reuse.

A stage's key hashes its name, the config fields it declares, any input files it names (weights,
split file, external set) and the sha256 of every output of the stages it reads. After a stage
finishes, `stages/<name>.json` records that key and the sha256 of each file it wrote (written
last, atomically: a stage killed midway has no record and runs again). On the next run with the
same --out, a stage whose key matches and whose files all hash as recorded is reused; a changed
setting changes the key of the stages that declare it, and, through their outputs, of the stages
that read those; a missing or corrupted file fails the hash check and the stage runs again.
Outputs are written deterministically (fixed zip timestamps), so a stage that runs again with the
same inputs and seed gives the same bytes and leaves the stages after it reusable.

Rows: a stage that works release by release (one K at a time) caches each row on its own
(`RowCache`, records in `stages/<stage>/<row>.json`). A row's key leaves out the lists of Ks and
generators and the outputs of the stages the stage reads row by row (`Stage.row_reads`), and
takes instead the hash of the files that row read. So adding a K to a finished run computes that
K's rows and reuses the rest, while a changed setting still changes every row's key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.core import layout
from audit.core.store import RunDir, file_sha256, to_json, write_text_atomic

RECORD_DIR = layout.STAGE_RECORDS


@dataclass(frozen=True)
class StageRecord:
    key: str
    files: dict[str, str]  # output name -> sha256
    seconds: float


def path_fingerprint(path: str | None) -> str | None:
    """sha256 of a file, or of a folder's files (names and contents, sorted); None if unset."""
    if not path:
        return None
    root = Path(path)
    if root.is_file():
        return file_sha256(root)
    digest = hashlib.sha256()
    for item in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(root)).encode())
        digest.update(file_sha256(item).encode())
    return digest.hexdigest()


def stage_key(
    name: str,
    config: dict[str, Any],
    fields: tuple[str, ...],
    inputs: dict[str, StageRecord],
    extra: dict[str, Any],
) -> str:
    payload = {
        "stage": name,
        "config": {field: config[field] for field in fields},
        "inputs": {stage: record.files for stage, record in sorted(inputs.items())},
        "extra": extra,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_record(store: RunDir, name: str) -> StageRecord | None:
    path = store.path(f"{RECORD_DIR}/{name}.json")
    try:
        raw = json.loads(path.read_text())
        return StageRecord(str(raw["key"]), dict(raw["files"]), float(raw["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: the stage runs again


def check_record(store: RunDir, record: StageRecord | None, key: str) -> str | None:
    """None if the record can be reused under this key, else why not."""
    if record is None:
        return "not run yet"
    if record.key != key:
        return "its settings or inputs changed"
    for name, digest in record.files.items():
        path = store.path(name)
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != digest:
            return f"{name} does not match its recorded hash (corrupted or edited)"
    return None


def save_record(store: RunDir, name: str, key: str, seconds: float) -> StageRecord:
    files = store.written_digests()
    record = StageRecord(key, files, round(seconds, 3))
    store.write_json(
        f"{RECORD_DIR}/{name}.json", {"key": key, "files": files, "seconds": record.seconds}
    )
    return record


# which generators and Ks run is what rows enumerate: a row's own key leaves the lists out
ROW_EXEMPT_FIELDS = ("k", "epsilon", "generator")


@dataclass
class RowCache:
    """Per-row reuse inside one stage. base_key: the stage's key without ROW_EXEMPT_FIELDS and
    without the stages it reads row by row; upstream: sha256 of those stages' files."""

    store: RunDir
    stage: str
    base_key: str
    upstream: dict[str, str]
    reused: list[str] = field(default_factory=list)

    def key(self, row: str, reads: Iterable[str]) -> str:
        files = {
            name: self.upstream.get(name) or file_sha256(self.store.path(name))
            for name in sorted(set(reads))
        }
        text = json.dumps({"base": self.base_key, "row": row, "reads": files}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _record_path(self, row: str) -> Path:
        return self.store.path(f"{RECORD_DIR}/{self.stage}/{row}.json")

    def valid(self, row: str, reads: Iterable[str]) -> tuple[StageRecord, Any] | None:
        """The row's record and result, if an earlier run left a valid one under this key."""
        return self._valid(row, self.key(row, reads))

    def _valid(self, row: str, key: str) -> tuple[StageRecord, Any] | None:
        try:
            raw = json.loads(self._record_path(row).read_text())
            record = StageRecord(str(raw["key"]), dict(raw["files"]), float(raw["seconds"]))
            result = raw["result"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if check_record(self.store, record, key) is not None:
            return None
        return record, result

    def get(self, row: str, reads: Iterable[str], compute: Callable[[], Any]) -> Any:
        """compute()'s JSON-able result for this row: recorded, or computed now and recorded.
        reads: the run-directory files the row's work reads (beyond the stage's base inputs)."""
        key = self.key(row, reads)
        result = self._reuse(row, key)
        return self._put(row, key, compute) if result is None else result

    def reuse(self, row: str, reads: Iterable[str]) -> Any | None:
        """The row's recorded result, counted as reused, or None if it must be computed."""
        return self._reuse(row, self.key(row, reads))

    def _reuse(self, row: str, key: str) -> Any | None:
        cached = self._valid(row, key)
        if cached is None:
            return None
        record, result = cached
        for name, digest in record.files.items():  # still this stage's outputs, hashed just now
            self.store.mark_written(name, digest)
        self.reused.append(row)
        return result

    def _put(self, row: str, key: str, compute: Callable[[], Any]) -> Any:
        """Compute the row now and record it (the files it wrote and its result)."""
        already = set(self.store.written)
        start = time.perf_counter()
        result = as_json(compute())
        seconds = time.perf_counter() - start
        files = {}
        for name in self.store.written:
            if name not in already:
                files[name] = file_sha256(self.store.path(name))
                self.store.mark_written(name, files[name])
        record = {"key": key, "files": files, "seconds": round(seconds, 3), "result": result}
        # not a stage output: its timing must not change the keys of the stages after it
        write_text_atomic(self._record_path(row), to_json(record))
        return result


def as_json(value: Any) -> Any:
    """value as it reads back from JSON: what a reused row returns, so fresh and reused rows give
    the same bytes downstream."""
    return json.loads(to_json(value))
