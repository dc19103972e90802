"""device_check.py's paper_run section: a reduced paper run sized to the time left, and the full
paper preset's time extrapolated from it stage by stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_check import Sizes


def reduced_settings(
    sizes: Sizes, seconds_left: float, rates: dict[str, float], members: int
) -> dict[str, Any]:
    """The reduced paper run's settings, sized so synthesis and training each take about a
    quarter of the time left at the rates measured earlier in this check (the rest: attacks,
    similarity, the DP-VAE, the report). Tiny: the smoke preset as it is."""
    settings = dict(sizes.run_settings)
    if sizes.run_preset != "paper":
        return settings
    group = 250
    bn_rate = rates.get("bn_image_steps_per_s")
    if bn_rate:
        fitting = seconds_left / 4 * bn_rate / sizes.run_bn_steps
        settings["n_synthetic"] = int(min(max(fitting // group, 1), 10) * group)
    else:
        settings["n_synthetic"] = 2500
    train_rate = rates.get("train_images_per_s")
    # image-epochs per epoch of every recipe: target, real-members baseline, the releases, the
    # population model on the test split (about members / 2.5)
    releases = len(settings["k"]) + 1
    per_epoch = 2.4 * members + releases * settings["n_synthetic"]
    epochs = int(seconds_left / 4 * train_rate / per_epoch) if train_rate else 10
    epochs = min(max(epochs, 2), 30)
    settings["target"] = {"epochs": epochs}
    settings["utility"] = {"epochs": epochs}
    settings["vae"] = {"epochs": max(1, epochs // 3)}
    settings["inversion"] = {**settings["inversion"], "eval_epochs": epochs}
    return settings


def check_paper_run(
    sizes: Sizes,
    device: str,
    data_settings: dict[str, Any],
    seconds_left: float,
    rates: dict[str, float],
    scratch: Path,
    loaded: Any,
) -> dict[str, Any]:
    import pandas as pd

    import audit
    from audit.core.layout import row_name
    from audit.engine.build import graph_of
    from audit.engine.context import dataset_for, remember_dataset

    full = audit.configure(preset="paper", device=device, **data_settings)
    if loaded is not None:  # the JPEGs the similarity section decoded, not decoded again
        remember_dataset(full, loaded)
    data = dataset_for(full)
    # members as audit/core/data.py's split draws them: half the train part, or a fraction of all
    pool = data.n_train // 2 if data.n_train else len(data.images) * full.member_fraction
    members = int(min(pool, full.max_members or pool))
    settings = reduced_settings(sizes, seconds_left, rates, members)
    out = scratch / "paper_run"
    config = audit.configure(
        preset=sizes.run_preset, device=device, out=str(out), **data_settings, **settings
    )
    record: dict[str, Any] = {
        "preset": sizes.run_preset,
        "dataset": config.dataset,
        "settings": settings,
        "n_synthetic": config.n_synthetic,
        "k": list(config.k),
    }
    # the run in a child process with a deadline: an overrun still leaves this check its JSON,
    # and config.json keeps the seconds of every stage the run finished
    given = {"preset": sizes.run_preset, "device": device, "out": str(out)}
    child = [sys.executable, "-c", RUN_CHILD, json.dumps({**given, **data_settings, **settings})]
    deadline = seconds_left
    began = time.perf_counter()
    process = subprocess.Popen(child, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        record["timed_out_after_s"] = round(deadline, 1)
    else:
        if process.returncode != 0:
            last = (stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"the reduced run failed (exit {process.returncode}): {last}")
    record["seconds"] = round(time.perf_counter() - began, 1)
    recorded = out / "config.json"  # absent when the run was stopped before it began
    manifest = json.loads(recorded.read_text()) if recorded.exists() else {"timings_s": {}}
    timings = manifest["timings_s"]
    record["stage_seconds"] = {k: v for k, v in timings.items() if "." not in k}
    peaks: dict[str, float] = {}  # the run records each task's peak; a stage's is its tasks' max
    for task_id, mib in manifest.get("peak_gpu_mb", {}).items():
        stage = task_id.split(":")[0]
        peaks[stage] = max(peaks.get(stage, 0.0), mib)
    record["stage_peak_gpu_mb"] = peaks
    record["peak_gpu_mb"] = max(peaks.values()) if peaks else None
    if "timed_out_after_s" not in record:
        results = audit.load_results(out)
        record["accuracy"] = {  # test accuracy of the target and of ResNet20 retrained on each row
            row_name(
                row["generator"],
                None if pd.isna(row["k"]) else int(row["k"]),
                None if pd.isna(row["epsilon"]) else float(row["epsilon"]),
            ): round(float(row["utility_acc"]), 4)
            for _, row in results.iterrows()
            if not pd.isna(row["utility_acc"])
        }
    # extrapolation: per stage, measured seconds / the cost model's estimate for this run, times
    # the cost model's estimate for the full preset (stages the model prices at 0 count as is)
    reduced_graph, full_graph = graph_of(config, dataset_for(config)), graph_of(full, data)
    estimate: dict[str, float] = {}
    for stage, measured in record["stage_seconds"].items():
        # a run cut short lists the stage it was in at 0 s: only finished stages count
        cut_short = "timed_out_after_s" in record and not measured
        if stage not in full_graph.tasks or cut_short:
            continue
        planned = sum(t.cost for t in reduced_graph.tasks.get(stage, []))
        planned_full = sum(t.cost for t in full_graph.tasks[stage])
        estimate[stage] = round(measured * planned_full / planned if planned else measured, 1)
    unmeasured = [s for s in full_graph.tasks if s not in estimate]
    record["paper_preset_estimate"] = {
        "stage_seconds": estimate,
        "total_hours": round(sum(estimate.values()) / 3600, 2),
        "stages_not_measured": unmeasured,
        "method": "each stage's measured seconds scaled by audit/engine/costs.py's work units, "
        "full paper preset over this run",
    }
    return record


# the reduced paper run's child process: settings as JSON in argv[1]
RUN_CHILD = (
    "import json, sys, audit; "
    "audit.run_audit(audit.configure(**json.loads(sys.argv[1])), overwrite=True)"
)
