"""The task graph: which tasks a config makes, what each waits for, and what a changed setting
recomputes (exactly the tasks downstream of it, predicted by --dry-run and seen in the run)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

from audit.cli import main
from audit.core.config import build_config
from audit.core.data import load_dataset
from audit.core.store import RunDir
from audit.engine.build import done_tasks, graph_of, run_keys
from audit.engine.driver import execute
from audit.engine.pipeline import STAGES
from tests.conftest import WITH_REFS


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", None, image_size=16)


def ids(graph) -> list[str]:
    return [t.id for tasks in graph.tasks.values() for t in tasks]


def test_graph_of_a_config(digits16):
    config = build_config(
        preset="smoke", generator=("bn_match", "dp_vae"), epsilon=(1.0, 10.0), mia_refs=4
    )
    graph = graph_of(config, digits16)
    releases = ["bn_match-k2", "bn_match-k4", "dp_vae-eps1", "dp_vae-eps10"]
    got = ids(graph)
    assert got[:4] == ["split", "target", "generate:bn_match", "generate:dp_vae"]
    assert [t for t in got if t.startswith("privacy:")] == [
        "privacy:holdout",
        *(f"privacy:{r}" for r in releases),
        "privacy:real",
    ]
    assert [t for t in got if t.startswith("mia_refs:")] == [f"mia_refs:ref{i}" for i in range(4)]
    for family in ("mia_model", "inversion", "features"):
        assert [t for t in got if t.startswith(family + ":")] == [
            f"{family}:{r}" for r in ["target", *releases]
        ]
    assert len(got) == len(set(got)) == len(graph)
    # inputs: each release's rows read that release's file; privacy rows wait for the holdout
    utility = {t.name: t for t in graph.tasks["utility"]}
    assert utility["dp_vae-eps1"].reads == ("synthetic/dp_vae-eps1.npz",)
    privacy = {t.name: t for t in graph.tasks["privacy"]}
    assert privacy["bn_match-k4"].after == ("holdout",)
    assert "privacy/holdout.npz" in privacy["bn_match-k4"].reads
    assert graph.upstream(graph.stage("mia_model")) == (
        "split",
        "target",
        "generate",
        "utility",
        "mia_refs",
    )
    assert set(graph.upstream(graph.stage("report"))) == {s.name for s in STAGES} - {"report"}
    # no reference pipelines: no reference tasks, the stage still commits (refs.json says 0)
    assert graph_of(dataclasses.replace(config, mia_refs=0), digits16).tasks["mia_refs"] == ()


def test_a_changed_setting_recomputes_exactly_its_dependents(smoke_run, tmp_path, digits16):
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir)
    config = build_config(preset="smoke", out=str(run_dir), mia_refs=4, epsilon=(0.1,))
    assert config.digest() == json.loads((run_dir / "config.json").read_text())["config_digest"]
    graph = graph_of(config, digits16)
    done = done_tasks(graph, RunDir(run_dir), run_keys(config, digits16))
    assert set(ids(graph)) - set(done) == {"report"}  # the report always runs
    # nn_k (nearest members kept) is a privacy setting: privacy's rows, then fidelity (which
    # reads privacy.json) and the report are all that change
    changed = dataclasses.replace(config, nn_k=2)
    graph = graph_of(changed, digits16)
    done = done_tasks(graph, RunDir(run_dir), run_keys(changed, digits16))
    predicted = set(ids(graph)) - set(done)
    privacy_rows = {t.id for t in graph.tasks["privacy"]}
    assert predicted == privacy_rows | {"fidelity", "report"}
    execute(changed)
    manifest = json.loads((run_dir / "config.json").read_text())
    recomputed = {s.name for s in STAGES} - set(manifest["reused_stages"])
    assert recomputed == {"privacy", "fidelity", "report"}
    assert "privacy" not in manifest["reused_rows"]  # every privacy row ran again
    with np.load(run_dir / "privacy/bn_match-k2.npz") as found:
        assert found["ssim_topk_values"].shape[1] == 2


def test_dry_run_prints_the_graph_and_what_is_done(smoke_run, capsys):
    assert main([*WITH_REFS, "--dry-run", "--out", str(smoke_run)]) == 0
    text = capsys.readouterr().out
    assert "mia_refs:ref3" in text and "privacy:holdout" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "done" in lines["mia_refs:ref0"] and "to run" in lines["report"]
    found = re.search(r"(\d+) tasks in \d+ stages; (\d+) done, 1 to run", text)
    assert found and int(found[2]) == int(found[1]) - 1
    # nothing was written: the run directory's manifest is the finished run's
    assert json.loads((smoke_run / "config.json").read_text())["status"] == "complete"
