"""Resumable runs (audit/stagecache.py): the same command on the same --out reuses finished
stages, a run killed with SIGKILL mid-generation finishes to byte-identical results, a changed
setting reruns only the stages that depend on it, and a corrupted output is recomputed."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.cli import main
from audit.config import RunConfig
from audit.pipeline import STAGES, load_plugins
from audit.stagecache import StageRecord, stage_key

ARGS = ["run", "--preset", "smoke", "--device", "cpu", "--k", "2", "300"]
OUTPUTS = ("results.json", "results.csv", "synthetic/k2.npz", "synthetic/k300.npz", "target.pt")


def manifest(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def cached_stages() -> list[str]:
    load_plugins()
    return [s.name for s in STAGES if s.cached]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "base"
    assert main([*ARGS, "--out", str(out)]) == 0
    assert manifest(out)["reused_stages"] == []
    return out


def same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_rerun_reuses_every_stage(base, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(base, again)
    assert main([*ARGS, "--out", str(again)]) == 0
    assert manifest(again)["reused_stages"] == cached_stages()
    assert manifest(again)["timings_s"]["generate"] == 0.0
    same_outputs(base, again)


@pytest.mark.slow
def test_killed_mid_generation_finishes_byte_identical(base, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "audit.cli", *ARGS, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "stages" / "target.json").exists():  # target done: generation under way
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "stages" / "generate.json").exists(), "generation finished before the kill"
    assert manifest(out)["status"] == "running"  # what a kill -9 leaves: nothing marked final
    assert not (out / "results.json").exists()
    assert main([*ARGS, "--out", str(out)]) == 0
    assert manifest(out)["reused_stages"] == ["split", "target"]
    same_outputs(base, out)


@pytest.mark.slow
def test_changed_setting_reruns_only_what_depends_on_it(base, tmp_path):
    out = tmp_path / "levels"
    shutil.copytree(base, out)
    assert main([*ARGS, "--similarity-levels", "0.6", "--out", str(out)]) == 0
    assert manifest(out)["reused_stages"] == [s for s in cached_stages() if s != "privacy"]
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "nn_ssim_frac_above_0.6" in header and "nn_ssim_frac_above_0.9" not in header


@pytest.mark.slow
def test_corrupted_output_is_recomputed_not_trusted(base, tmp_path, capsys):
    out = tmp_path / "corrupt"
    shutil.copytree(base, out)
    original = (out / "synthetic/k300.npz").read_bytes()
    (out / "synthetic/k300.npz").write_bytes(original[:100] + b"garbage" + original[107:])
    assert main([*ARGS, "--out", str(out)]) == 0
    assert "synthetic/k300.npz does not match its recorded hash" in capsys.readouterr().err
    # generation ran again and gave the same bytes, so everything after it was reused
    assert manifest(out)["reused_stages"] == [s for s in cached_stages() if s != "generate"]
    same_outputs(base, out)


def test_every_setting_that_changes_results_keys_some_stage():
    load_plugins()
    declared = {field for stage in STAGES for field in stage.config}
    ignored = {"out", "preset", "redact_private", "download"}  # no effect on any stage output
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert fields - ignored <= declared, sorted(fields - ignored - declared)
    assert declared <= fields, sorted(declared - fields)


def test_key_depends_on_declared_settings_and_inputs_only():
    config = dataclasses.asdict(RunConfig())
    upstream = {"split": StageRecord("k", {"split.npz": "aa"}, 1.0)}
    key = stage_key("utility", config, ("utility", "seed"), upstream, {})
    changed_epochs = {**config, "utility": {**config["utility"], "epochs": 99}}
    assert stage_key("utility", changed_epochs, ("utility", "seed"), upstream, {}) != key
    changed_other = {**config, "nn_k": 7}
    assert stage_key("utility", changed_other, ("utility", "seed"), upstream, {}) == key
    new_input = {"split": StageRecord("k", {"split.npz": "bb"}, 1.0)}
    assert stage_key("utility", config, ("utility", "seed"), new_input, {}) != key
