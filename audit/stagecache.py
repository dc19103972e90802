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
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.store import RunDir, file_sha256

RECORD_DIR = "stages"


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
    files = {written: file_sha256(store.path(written)) for written in store.written}
    record = StageRecord(key, files, round(seconds, 3))
    store.write_json(
        f"{RECORD_DIR}/{name}.json", {"key": key, "files": files, "seconds": record.seconds}
    )
    return record
