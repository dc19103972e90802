"""Resumable runs (audit/engine/keys.py): the same command on the same --out reuses finished
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
from audit.core.config import RunConfig
from audit.core.layout import row_name
from audit.engine.keys import StageRecord, stage_key
from audit.engine.pipeline import STAGES

# BN matching alone: these tests are about its K chain (the DP rows reuse like any row)
ARGS = ["run", "--preset", "smoke", "--device", "cpu", "--generator", "bn_match", "--k", "2", "300"]
OUTPUTS = ("results.json", "results.csv", "synthetic/k2.npz", "synthetic/k300.npz", "target.pt")


def manifest(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def cached_stages() -> list[str]:
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
def test_killed_mid_generation_finishes_byte_identical(base, tmp_path, capsys):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "audit.cli", *ARGS, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    # K=2 saved (with its checkpoint) while K=300 is still being optimised
    while not (out / "stages" / "generate" / "bn_match-k2.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.02)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "stages" / "generate.json").exists(), "generation finished before the kill"
    assert manifest(out)["status"] == "running"  # what a kill -9 leaves: nothing marked final
    assert not (out / "results.json").exists()
    assert main([*ARGS, "--out", str(out)]) == 0
    # the population model reads only the split: the graph runs it before generation
    assert manifest(out)["reused_stages"] == ["split", "target", "population_model"]
    assert manifest(out)["reused_rows"]["generate"] == ["bn_match-k2"]
    assert "bn_match: going on from the checkpoint at K=2" in capsys.readouterr().err
    same_outputs(base, out)


@pytest.mark.slow
def test_changed_setting_reruns_only_what_depends_on_it(base, tmp_path):
    out = tmp_path / "levels"
    shutil.copytree(base, out)
    assert main([*ARGS, "--similarity-levels", "0.6", "--out", str(out)]) == 0
    # fidelity reads privacy.json (the holdout): it reruns after privacy, with the same figures
    rerun = ("privacy", "fidelity")
    assert manifest(out)["reused_stages"] == [s for s in cached_stages() if s not in rerun]
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "nn_ssim_frac_above_0_6" in header and "nn_ssim_frac_above_0_9" not in header


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


@pytest.mark.slow
def test_another_generators_setting_reruns_no_bn_matching(base, tmp_path):
    """A release row's key holds only its own generator's settings (GeneratorPlugin.settings):
    the VAEs' epochs do not touch BN matching, so its rows and every stage after it are reused."""
    out = tmp_path / "vae"
    shutil.copytree(base, out)
    assert main([*ARGS, "--dp-epochs", "3", "--out", str(out)]) == 0
    run = manifest(out)
    assert "generate" not in run["reused_stages"]  # the stage's key holds every generator's
    assert run["reused_rows"]["generate"] == ["bn_match-k2", "bn_match-k300"]
    assert run["timings_s"].get("generate.bn_match") is None  # no step of BN matching ran
    for stage in ("privacy", "utility", "mia_release", "mia_model", "inversion", "features"):
        assert stage in run["reused_stages"], stage
    for name in OUTPUTS[1:]:  # results.json differs in its config digest alone
        assert (base / name).read_bytes() == (out / name).read_bytes(), name
    assert results_rows(out) == results_rows(base)


ROW_STAGES = ("generate", "privacy", "utility", "mia_release", "mia_model", "inversion", "features")


def results_rows(run: Path) -> dict:
    rows = json.loads((run / "results.json").read_text())["rows"]
    return {row_name(row["generator"], row["k"]): row for row in rows}


@pytest.mark.slow
def test_adding_a_k_computes_only_the_new_k(base, tmp_path, capsys):
    out = tmp_path / "more"
    shutil.copytree(base, out)
    before = {p: p.read_bytes() for p in (out / "synthetic").iterdir()}
    assert main([*ARGS[:-2], "2", "150", "300", "--out", str(out)]) == 0
    # K=150 goes on from K=2's checkpoint: 148 steps, not 150 (nor 300)
    assert "bn_match: going on from the checkpoint at K=2" in capsys.readouterr().err
    reused_rows = manifest(out)["reused_rows"]
    assert sorted(reused_rows) == sorted(ROW_STAGES)
    for stage, rows in reused_rows.items():
        assert "bn_match-k150" not in rows, stage
        assert {"bn_match-k2", "bn_match-k300"} <= set(rows), stage
    assert {"real", "target"} & set(reused_rows["inversion"]) == {"target"}
    assert "population_model" in manifest(out)["reused_stages"]  # the inversion evaluator too
    report = (out / "report.html").read_text()
    assert "<td>generate</td><td>" in report and "<td>bn_match-k2, bn_match-k300</td>" in report
    for path, data in before.items():
        assert path.read_bytes() == data, path
    rows, old = results_rows(out), results_rows(base)
    assert rows["bn_match-k2"] == old["bn_match-k2"]
    assert rows["bn_match-k300"] == old["bn_match-k300"]
    assert rows["bn_match-k150"]["utility_acc"] >= 0

    # and dropping a K again computes nothing: every row is reused, only K=300 is reported
    assert main([*ARGS[:-2], "300", "--out", str(out)]) == 0
    for stage, rows_reused in manifest(out)["reused_rows"].items():
        assert "bn_match-k300" in rows_reused, stage
    assert set(results_rows(out)) == {"real", "target", "bn_match-k300"}
    assert results_rows(out)["bn_match-k300"] == old["bn_match-k300"]


@pytest.mark.slow
def test_another_torch_version_recomputes(base, tmp_path, monkeypatch):
    import audit.engine.build

    out = tmp_path / "upgraded"
    shutil.copytree(base, out)
    versions = audit.engine.build.package_versions()
    upgraded = {**versions, "torch": f"{versions['torch']}.post1"}
    monkeypatch.setattr(audit.engine.build, "package_versions", lambda: upgraded)
    assert main([*ARGS[:-2], "2", "--out", str(out)]) == 0
    assert manifest(out)["reused_stages"] == [] and manifest(out)["reused_rows"] == {}


def test_every_setting_that_changes_results_keys_some_stage():
    declared = {field for stage in STAGES for field in stage.config}
    ignored = {"out", "preset", "redact_originals", "download"}  # no effect on any stage output
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


def test_a_source_edit_recomputes(base, tmp_path, monkeypatch):
    """Under an editable install the version number stays while the code changes: the stage
    keys hash the suite's source files too."""
    import audit.engine.build

    monkeypatch.setattr(audit.engine.build, "source_digest", lambda: "edited")
    out = tmp_path / "edited"
    shutil.copytree(base, out)
    assert main([*ARGS[:-2], "2", "--out", str(out)]) == 0
    assert manifest(out)["reused_stages"] == [] and manifest(out)["reused_rows"] == {}


def test_source_digest_sees_an_edit(tmp_path):
    from audit.core import provenance

    copy = tmp_path / "reports"
    shutil.copytree(provenance.package_dirs()[-1], copy)
    before = provenance.source_digest((copy,))
    provenance._digest.cache_clear()
    template = copy / "templates" / "report.html"
    template.write_text(template.read_text() + "<!-- edited -->\n")
    assert provenance.source_digest((copy,)) != before
    (copy / "notes.txt").write_text("not source")  # other files do not count
    provenance._digest.cache_clear()
    template.write_text(template.read_text().removesuffix("<!-- edited -->\n"))
    assert provenance.source_digest((copy,)) == before
