"""`audit check` and the thresholds it gates on: exit 0 / 1 / 2, one line per breach, and the
shipped defaults flag a release made of copies of private images (a real run, real files)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.errors import AuditError
from reports.thresholds import LEAKAGE_METRICS, METRICS, load_thresholds

FIXTURE = Path(__file__).parent / "fixtures" / "run"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_thresholds_cover_every_metric():
    defaults = load_thresholds()
    assert set(defaults.limits) == set(METRICS)
    assert defaults.share_ssim_level == 0.9
    assert "shipped" in defaults.source


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[thresholds]\nmax_nn_sim = 0.9\n", "unknown metric max_nn_sim"),
        ("[thresholds\nmax_nn_ssim = 0.9\n", "not valid TOML"),
        ('[thresholds]\nmax_nn_ssim = "high"\n', "must be a number"),
        ("[thresholds]\nmax_mia_auc = true\n", "must be a number"),
        ("[thresholds]\nshare_ssim_level = 0.8\n", "sets no thresholds"),
    ],
)
def test_bad_thresholds_file_exits_2(tmp_path, capsys, text, problem):
    path = write(tmp_path / "t.toml", text)
    with pytest.raises(AuditError, match=problem):
        load_thresholds(path)
    assert main(["check", str(FIXTURE), "--thresholds", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and problem in err and "\n" not in err


def test_missing_or_unfinished_run_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "no run directory" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(FIXTURE, unfinished)
    manifest = json.loads((unfinished / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps({**manifest, "status": "failed"}))
    assert main(["check", str(unfinished)]) == 2
    assert "not complete" in capsys.readouterr().err
    (unfinished / "results.json").unlink()
    assert main(["check", str(unfinished)]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nowhere"), "--thresholds", "missing.toml"]) == 2


@pytest.mark.parametrize("command", ["check", "report"])
def test_corrupt_saved_result_exits_2(tmp_path, capsys, command):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "privacy" / "bn_match-k2.npz").write_bytes(b"not a zip")
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing or corrupt" in err and "\n" not in err


def test_within_and_beyond_thresholds(tmp_path, capsys):
    # the fixture is a smoke run: leakage at chance, utility at chance
    leakage = write(
        tmp_path / "leak.toml",
        "[thresholds]\nmax_nn_ssim = 0.95\nmax_mia_auc = 0.65\nmax_tpr_at_1fpr = 0.1\n",
    )
    assert main(["check", str(FIXTURE), "--thresholds", str(leakage)]) == 0
    assert capsys.readouterr().out.startswith("PASS: 2 release(s) within 3 thresholds")
    strict = write(tmp_path / "s.toml", "[thresholds]\nmin_utility = 0.99\nmax_nn_ssim = 0.1\n")
    assert main(["check", str(FIXTURE), "--thresholds", str(strict)]) == 1
    out = capsys.readouterr().out.splitlines()
    breaches = [line for line in out if line.startswith("BREACH")]
    assert len(breaches) == 4  # two releases x two thresholds, one line each
    assert "BREACH bn_match-k2: utility_acc = 0.1 < min_utility = 0.99" in out
    assert out[-1].startswith("FAIL: 4 breach(es) in 2 release(s)")


def test_gate_fails_closed_on_an_unmeasured_metric(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    results = json.loads((run / "results.json").read_text())
    for row in results["rows"]:
        row.pop("eps_lower", None)
    (run / "results.json").write_text(json.dumps(results))
    limits = write(tmp_path / "t.toml", "[thresholds]\nmax_eps_lower = 5\n")
    assert main(["check", str(run), "--thresholds", str(limits)]) == 1
    assert "max_eps_lower not measured" in capsys.readouterr().out


@pytest.mark.slow
def test_default_thresholds_flag_copies_of_private_images(tmp_path, capsys, digits):
    """A 'synthetic' set that is 40 private members copied verbatim, audited end to end."""
    members = np.load(FIXTURE / "split.npz")["members"][:40]
    copies = tmp_path / "copies.npz"
    np.savez(copies, images=digits.images[members], labels=digits.labels[members])
    out = tmp_path / "audit"
    argv = ["run", "--preset", "smoke", "--device", "cpu", "--synthetic", str(copies)]
    assert main([*argv, "--split", str(FIXTURE / "split.npz"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["check", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("BREACH external: nn_ssim_max = 1 > max_nn_ssim") for line in lines)
    assert any("share of released images above" in line for line in lines)
    assert any("worst membership attack AUC" in line for line in lines)
    html = (out / "report.html").read_text()
    assert "FAIL:" in html and "PASS:" not in html


def test_leakage_metrics_exclude_utility():
    assert "min_utility" not in LEAKAGE_METRICS and "max_mia_auc" in LEAKAGE_METRICS
