"""bench/device_check.py, the prepared GPU check: with --tiny every section runs on a CPU, so the
command a lent GPU gets has run end to end before that GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "device_check.py"
SECTIONS = {"similarity", "bn_groups", "training", "paper_run"}


def test_tiny_check_runs_every_section_and_records_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "device_check.json").read_text())
    sections = doc["sections"]
    assert set(sections) == SECTIONS
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "ok")
    assert doc["failed"] == {} and doc["skipped"] == {} and doc["status"] == "complete"
    assert torch.__version__.startswith(doc["environment"]["packages"]["torch"])

    sim = sections["similarity"]
    for metric in ("ssim", "haarpsi"):
        part = sim[metric]
        # the engine's nearest neighbours are the piq loop's, value and index
        assert part["same_argmax"] == 1.0 and part["max_abs_diff"] < 1e-4
        assert part["seconds"] > 0 and part["pairs_per_s"] > 0
        assert part["block"] == [sim["queries"], sim["references"]]  # tiny: one block
    for name in ("bn_groups", "training"):
        assert sections[name]["speedup"] > 0
    assert sections["training"]["suite_images_per_s"] > 0

    run = sections["paper_run"]
    assert set(run["accuracy"]) == {"target", "real", "bn_match-k2", "bn_match-k4"}
    assert all(0 <= acc <= 1 for acc in run["accuracy"].values())
    assert run["stage_peak_gpu_mb"] == {}  # a CPU run records no GPU memory
    estimate = run["paper_preset_estimate"]
    # every stage of the paper preset's graph was measured in the reduced run, and the full
    # preset (10,000 images, K up to 2,000, 200 epochs) costs far more than the smoke-sized run
    assert estimate["stages_not_measured"] == []
    assert estimate["stage_seconds"]["generate"] > 100 * run["stage_seconds"]["generate"]
    assert estimate["total_hours"] * 3600 > 100 * run["seconds"]

    # the printed table names each measure, and where the figures are
    assert "NN-SSIM 24 x 96" in proc.stdout and "BN groups in one pass" in proc.stdout
    assert f"figures: {tmp_path / 'device_check.json'}" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_full_check_without_a_gpu_is_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "no GPU: the full check takes hours on a CPU; use --tiny"
    assert not (tmp_path / "device_check.json").exists()


def test_a_reduced_run_cut_short_leaves_what_it_measured(tmp_path, monkeypatch):
    """On a GPU the reduced paper run gets the time left; past it the run is stopped, and the
    section still records the stages that finished (none extrapolated from a stage cut short)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import device_check

    record = device_check.check_paper_run(
        device_check.TINY, "cpu", {"dataset": "digits"}, 8.0, {}, tmp_path, None
    )
    assert record["timed_out_after_s"] == 8.0 and 8.0 <= record["seconds"] < 30
    assert "accuracy" not in record  # results.csv is written only by a finished run
    estimate = record["paper_preset_estimate"]
    assert "report" in estimate["stages_not_measured"]
    assert set(estimate["stage_seconds"]) <= set(record["stage_seconds"])
    assert not (tmp_path / "paper_run" / "results.json").exists()
