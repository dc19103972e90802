"""The interface: the Python API (and the documented notebook example, executed), the config file
and its names, machine-readable results (column dictionary, schema version, verdict), the
end-of-run summary, --model module:function and the generated docs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import audit
from audit.arguments import build_parser, flag_settings
from audit.cli import main
from audit.core.config import RunConfig, build_config
from audit.core.errors import AuditError
from audit.core.layout import row_of
from audit.engine.columns import COLUMNS, describe
from audit.flags import SETTING_OF, flag_of
from reports.columns import SAFE_NAME, SCHEMA_VERSION
from reports.summary import strongest_attack, summary_rows
from tests.conftest import SMOKE

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), re.S)


def test_documented_notebook_example_runs(tmp_path, monkeypatch):
    """docs/api.md's example, executed as written (in a scratch directory)."""
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert blocks, "docs/api.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    results, verdict = namespace["results"], namespace["verdict"]
    assert isinstance(results, pd.DataFrame) and set(results.generator) >= {"bn_match", "real"}
    assert isinstance(verdict, audit.AuditVerdict)
    run_dir = Path(namespace["run_dir"])  # type: ignore[arg-type]
    recorded = json.loads((run_dir / "results.json").read_text())
    assert verdict.releases == {
        row: entry["passed"] for row, entry in recorded["verdict"]["releases"].items()
    }


def test_config_json_round_trips_through_build_config(smoke_run):
    """The names config.json records are the names the config file takes: feeding a run's
    recorded config back gives the same configuration (the same digest)."""
    manifest = json.loads((smoke_run / "config.json").read_text())
    rebuilt = build_config(manifest["config"])
    assert rebuilt.digest() == manifest["config_digest"]
    assert json.loads(json.dumps(rebuilt.to_dict())) == manifest["config"]


def test_recorded_config_of_an_external_audit_round_trips():
    """--synthetic runs record generator ["external"] and the preset's k; fed back, neither
    counts as the conflicting flag it would be by hand."""
    config = build_config(preset="smoke", synthetic="release.npz", out="x")
    recorded = json.loads(json.dumps(config.to_dict()))
    assert build_config(recorded).digest() == config.digest()
    with pytest.raises(audit.AuditError, match="--k"):
        build_config(recorded, k=[7])
    with pytest.raises(audit.AuditError, match="--generator"):
        build_config(recorded, generator=["bn_match"])


def toml_of(settings: dict, section: str = "") -> str:
    """A config.json block as TOML (strings, numbers, booleans, lists; null is left out)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"[{section}]"] if section else []
    lines += [
        f"{k} = {value(v)}"
        for k, v in settings.items()
        if v is not None and not isinstance(v, dict)
    ]
    for k, v in settings.items():
        if isinstance(v, dict):
            lines.append(toml_of(v, k))
    return "\n".join(lines) + "\n"


def test_recorded_config_is_a_config_file(smoke_run, tmp_path):
    """config.json's `config` block, written as TOML, configures the same run (same digest)."""
    manifest = json.loads((smoke_run / "config.json").read_text())
    toml = tmp_path / "recorded.toml"
    toml.write_text(toml_of(manifest["config"]))
    assert audit.configure(toml).digest() == manifest["config_digest"]
    with pytest.raises(audit.AuditError, match="test-only"):
        audit.configure(dp={"actual_noise_factor": 0.0})


def test_config_file_then_flags(tmp_path):
    toml = tmp_path / "audit.toml"
    toml.write_text(
        'preset = "smoke"\nk = [3, 5]\nn_synthetic = 12\nsimilarity_levels = [0.8]\n'
        "redact_originals = true\n[bn]\nlr = 0.05\ngroup_size = 6\n[features]\n"
        "noise_scales = [0.0, 0.5]\n[target]\nepochs = 3\n"
    )
    args = build_parser().parse_args(
        ["run", "--config", str(toml), "--k", "7", "--bn-loss", "zeroq", "--no-redact-originals"]
    )
    config = audit.configure(args.config, flag_settings(args))
    assert config.k == (7,)  # the flag beats the file
    assert config.n_synthetic == 12 and config.similarity_levels == (0.8,)
    assert config.bn.lr == 0.05 and config.bn.group_size == 6  # the file beats the preset
    assert config.bn.statistics == "image" and config.bn.ce_weight == 0.0  # --bn-loss zeroq
    assert config.features.noise_scales == (0.0, 0.5)
    assert config.target.epochs == 3 and config.utility.epochs == 2  # smoke's, untouched
    assert config.redact_originals is False and config.preset == "smoke"


@pytest.mark.parametrize(
    "text, match",
    [
        ("n_synthetics = 5\n", "unknown setting 'n_synthetics'"),
        ("[bn]\nrate = 0.1\n", "unknown setting 'bn.rate'"),
        ("[dp]\nactual_noise_factor = 0.0\n", "dp.actual_noise_factor is test-only"),
        ('n_synthetic = "many"\n', "n_synthetic must be an integer"),
        ("k = [1.5]\n", "k must be an integer"),
        ("bn = 3\n", "[bn] must be a table"),
        ('[bn]\nstatistics = "pixel"\n', "bn.statistics must be one of batch, image"),
        ("k = [0]\n", "--k must be positive"),
        ("n_synthetic = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_one_line_exit_2(tmp_path, capsys, text, match):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    out = tmp_path / "out"
    assert main([*SMOKE, "--config", str(toml), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert match in err and not out.exists()


def test_every_setting_flag_is_named_after_its_setting():
    parser = build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions: dict[str, argparse.Action] = {}
    for action in run.choices["run"]._actions:  # the first flag of a dest; hidden aliases follow
        actions.setdefault(action.dest, action)
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for dest, setting in SETTING_OF.items():
        assert actions[dest].option_strings[0] == flag_of(setting), setting
        head, _, tail = setting.partition(".")
        assert head in fields, setting
        if tail:
            section = fields[head].default_factory()  # type: ignore[misc]
            assert hasattr(section, tail), setting


def test_results_columns_are_documented_and_safe(smoke_run):
    header = (smoke_run / "results.csv").read_text().splitlines()[0].split(",")
    recorded = json.loads((smoke_run / "results.json").read_text())
    keys = {key for row in recorded["rows"] for key in row}
    assert set(header) == keys
    undocumented = [c for c in header if describe(c) is None]
    assert not undocumented, undocumented
    assert all(SAFE_NAME.match(c) for c in header), [c for c in header if not SAFE_NAME.match(c)]
    assert recorded["schema_version"] == SCHEMA_VERSION
    frame = audit.load_results(smoke_run)
    assert list(frame.columns) == header
    assert frame.query("generator == 'real'").utility_acc.notna().all()  # attribute access works


def test_column_dictionary_names_are_unique_and_described():
    names = [c.name for c in COLUMNS]
    assert len(names) == len(set(names))
    for c in COLUMNS:
        assert c.meaning and c.range and c.direction, c.name
    assert describe("nn_ssim_frac_above_0_9").name == "nn_{metric}_frac_above_{level}"
    assert describe("nn_ssim_frac_above_0.9") is None  # the unsafe spelling is gone
    assert describe("mia_model_tpr_at_0_1fpr").name == "{family}_tpr_at_0_1fpr"


def test_check_json_agrees_with_results_json(smoke_run, capsys):
    status = main(["check", str(smoke_run), "--json"])
    document = json.loads(capsys.readouterr().out)
    recorded = json.loads((smoke_run / "results.json").read_text())
    assert status == (0 if document["passed"] else 1)
    assert recorded["verdict"]["passed"] == document["passed"]
    assert recorded["verdict"]["releases"] == document["releases"]
    for row in recorded["rows"]:
        entry = document["releases"].get(row_of(row))
        assert row["verdict"] == (None if entry is None else "pass" if entry["passed"] else "fail")
    verdicts = {r: e["passed"] for r, e in document["releases"].items()}
    assert audit.verdict(smoke_run).releases == verdicts
    assert bool(audit.verdict(smoke_run)) == document["passed"]


def test_summary_picks_the_strongest_attack_at_the_lowest_resolvable_fpr():
    row = {
        "generator": "bn_match",
        "k": 5,
        "epsilon": None,
        "mia_release_attack": "ssim",
        "mia_release_auc": 0.61,
        "mia_release_tpr_at_0_1fpr": None,  # fewer than 1,000 non-members
        "mia_release_tpr_at_1fpr": 0.04,
        "mia_model_attack": "loss",
        "mia_model_auc": 0.55,
        "mia_model_tpr_at_0_1fpr": 0.002,
        "mia_model_tpr_at_1fpr": 0.02,
    }
    assert strongest_attack(row) == {
        "attack": "mia_release:ssim",
        "attack_auc": 0.61,
        "attack_tpr": 0.04,
        "attack_fpr": 0.01,
    }
    real = {"generator": "real", "k": None, "epsilon": None, "utility_acc": 0.8}
    rows = summary_rows([{**row, "utility_acc": 0.4}, real], {"bn_match-k5": False})
    assert rows[0]["utility_vs_real"] == pytest.approx(0.5) and rows[0]["verdict"] == "fail"
    assert rows[1]["verdict"] == "baseline" and math.isclose(rows[1]["utility_vs_real"], 1.0)


def test_summary_of_a_run(smoke_run):
    table = audit.summary(smoke_run)
    recorded = json.loads((smoke_run / "results.json").read_text())
    released = [r for r in recorded["rows"] if r["generator"] not in ("real", "target")]
    assert list(table.release) == [row_of(r) for r in released] + ["real", "target"]
    assert set(table.verdict) <= {"pass", "fail", "baseline"}
    for _, line in table.iterrows():
        if line.attack_auc is not None and not pd.isna(line.attack_auc):
            family = line.attack.split(":")[0]
            row = next(r for r in recorded["rows"] if row_of(r) == line.release)
            assert line.attack_auc == max(
                row[f"{f}_auc"] for f in ("mia_release", "mia_model") if row.get(f"{f}_auc")
            )
            assert row[f"{family}_auc"] == line.attack_auc


def test_user_model_is_audited_end_to_end(tmp_path, capsys):
    out = tmp_path / "user"
    model = "tests.fixtures.user_models:small_bn_cnn"
    args = ["--model", model, "--generator", "bn_match", "--k", "2", "--out", str(out)]
    assert main([*SMOKE, *args]) == 0
    printed = capsys.readouterr().out
    assert "strongest attack" in printed and "report:" in printed  # the end-of-run table
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["model"] == model
    results = audit.load_results(out)
    assert set(results.generator) == {"bn_match", "real", "target"}
    assert results.utility_acc.notna().all()
    with np.load(out / "synthetic" / "k2.npz") as release:
        assert release["images"].shape == (20, 16, 16, 1)


def test_generated_docs_are_current():
    """docs/cli.md's defaults table and docs/columns.md come from the parser and the column
    dictionary; `python -m audit.docs` rewrites them."""
    done = subprocess.run(
        [sys.executable, "-m", "audit.docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("section", ["target", "utility"])
def test_a_batch_of_one_is_a_one_line_error(section):
    """The training loop skips a batch of one image (BatchNorm needs two), so batch_size 1 would
    train nothing and fail later with an unrelated error: the config refuses it."""
    with pytest.raises(AuditError, match="batch size of at least 2"):
        build_config(preset="smoke", **{section: {"batch_size": 1}})
