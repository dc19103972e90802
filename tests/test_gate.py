"""`audit check` and the thresholds it gates on: exit 0 / 1 / 2, one line per breach, and the
shipped defaults flag a release made of copies of private images (a real run, real files)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.core.errors import AuditError
from audit.core.layout import row_of
from audit.core.store import RunDir
from reports.thresholds import LEAKAGE_METRICS, TESTS, check, load_thresholds
from reports.verdict import summary_lines

FIXTURE = Path(__file__).parent / "fixtures" / "run"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_gate_is_holdout_relative():
    """The default gates on exact copies and on the tests against held-out records; absolute
    levels (max_nn_ssim, ...) and utility are opt-in."""
    defaults = load_thresholds()
    assert defaults.limits == {"max_exact_copies": 0}
    assert set(defaults.tests) == set(TESTS) and defaults.alpha == 0.05
    assert "shipped" in defaults.source


def test_tests_share_one_bonferroni_level(tmp_path):
    results = json.loads((FIXTURE / "results.json").read_text())
    verdicts = check(RunDir(FIXTURE), results, load_thresholds())
    tests = [v for v in verdicts if v.is_test]
    # three released rows x six tests share 3/4 of alpha; the DP-claim test of the audited
    # dp_vae row takes the other quarter (weighted Bonferroni: 18 x 0.0375 / 18 + 0.0125 = 0.05)
    assert len(tests) == 3 * 6 + 1
    claim = [v for v in tests if v.metric == "dp_claim"]
    others = [v for v in tests if v.metric != "dp_claim"]
    assert all(v.limit == pytest.approx(0.0375 / 18) and v.n_tests == 18 for v in others)
    assert len(claim) == 1 and claim[0].limit == pytest.approx(0.0125) and claim[0].n_tests == 1
    assert sum(v.limit for v in tests) == pytest.approx(0.05)
    row = next(r for r in results["rows"] if r["generator"] == "bn_match" and r["k"] == 2)
    significant = {**row, "holdout_share_ssim_p": 0.004}  # < 0.05 but > 0.05 / 18
    alone = check(RunDir(tmp_path), {"rows": [significant]}, load_thresholds())
    share = next(v for v in alone if v.metric == "holdout_share_ssim")
    assert share.limit == pytest.approx(0.05 / 6) and not share.passed  # one row: 6 tests
    assert (
        next(
            v
            for v in check(RunDir(tmp_path), {"rows": [significant, row]}, load_thresholds())
            if v.metric == "holdout_share_ssim" and v.row == "bn_match-k2"
        ).passed
        is False
    )  # two identical rows: 0.004 < 0.05 / 12 still fails


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[thresholds]\nmax_nn_sim = 0.9\n", "unknown metric max_nn_sim"),
        ("[thresholds\nmax_nn_ssim = 0.9\n", "not valid TOML"),
        ('[thresholds]\nmax_nn_ssim = "high"\n', "must be a number"),
        ("[thresholds]\nmax_mia_auc = true\n", "must be a number"),
        ("[thresholds]\nshare_ssim_level = 0.8\n", "sets no thresholds"),
        ('[thresholds]\ntests = ["holdout_share_psnr"]\n', "unknown test holdout_share_psnr"),
        ('[thresholds]\ntests = "copy_share_ssim"\n', "must be a list of test names"),
        ('[thresholds]\nalpha = 1.5\ntests = ["mia_model"]\n', "alpha must lie in"),
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
def test_results_of_an_older_schema_exit_2(tmp_path, capsys, command):
    """A run written before the column renames (schema 1: `tpr_at_1%fpr`, `frac_above_0.9`) is
    refused in one line that says how to refresh it, not rendered with missing keys."""
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    results = json.loads((run / "results.json").read_text())
    del results["schema_version"]
    (run / "results.json").write_text(json.dumps(results))
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "schema version 1" in err and "\n" not in err


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
    assert main(["check", str(FIXTURE)]) == 0  # the shipped default: holdout-relative tests
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("PASS: 3 release(s) within 1 limit(s) and 7 test(s)")
    assert "PASS bn_match-k2: no exact copy of a member; none of 6 tests" in out
    leakage = write(
        tmp_path / "leak.toml",
        "[thresholds]\nmax_nn_ssim = 0.95\nmax_mia_auc = 0.65\nmax_eps_lower = 1\n",
    )
    assert main(["check", str(FIXTURE), "--thresholds", str(leakage)]) == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith("PASS: 3 release(s) within 3 limit(s) and 0 test(s)")
    )
    strict = write(tmp_path / "s.toml", "[thresholds]\nmin_utility = 0.99\nmax_nn_ssim = 0.1\n")
    assert main(["check", str(FIXTURE), "--thresholds", str(strict)]) == 1
    out = capsys.readouterr().out.splitlines()
    breaches = [line for line in out if line.startswith("BREACH")]
    assert len(breaches) == 6  # three releases x two thresholds, one line each
    assert "BREACH bn_match-k2: utility_acc = 0.08 < min_utility = 0.99" in out
    assert any(line.startswith("FAIL bn_match-k4: min_utility: 0.04 beyond 0.99") for line in out)
    assert out[-1].startswith("FAIL: 6 breach(es) in 3 release(s)")


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
def test_default_gate_flags_copies_and_passes_held_out_images(tmp_path, capsys, digits):
    """Audited end to end with the fixture's split: 40 private members copied verbatim fail the
    default gate (exact copies, copy shares, the release attack); 40 held-out images that no
    part of the split holds pass it."""
    split = np.load(FIXTURE / "split.npz")
    members = split["members"][:40]
    used = np.concatenate([split[part] for part in split.files])
    unused = np.setdiff1d(np.arange(len(digits.images)), used)[:40]
    argv = ["run", "--preset", "smoke", "--device", "cpu", "--split", str(FIXTURE / "split.npz")]
    outcomes = {}
    for name, chosen in (("copies", members), ("held_out", unused)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, images=digits.images[chosen], labels=digits.labels[chosen])
        out = tmp_path / name
        assert main([*argv, "--synthetic", str(path), "--out", str(out)]) == 0
        run_output = capsys.readouterr().out
        assert main(["check", str(out)]) in (0, 1)
        outcomes[name] = (run_output, capsys.readouterr().out, (out / "report.html").read_text())
    run_output, check_output, html = outcomes["copies"]
    assert "FAIL external: 40 suspected copies of members (" in run_output  # the verdict line
    assert "expected by chance); 40 exact copies of members" in run_output
    assert run_output.index("FAIL external") < run_output.index("report: ")
    assert "BREACH external: released images within +-2 grey levels" in check_output
    assert "BREACH external: copy_count_ssim = 40" in check_output
    assert "BREACH external: mia_release" in check_output
    assert (
        "FAIL:" in html
        and "PASS:" not in html
        and "Suspected copies in external: 40 (40 exact)" in html
    )
    run_output, check_output, html = outcomes["held_out"]
    assert "PASS external: no exact copy of a member; none of 6 tests" in run_output
    assert check_output.splitlines()[-1].startswith("PASS: 1 release(s)")
    assert "PASS:" in html and "FAIL:" not in html


def test_leakage_metrics_exclude_utility():
    assert "min_utility" not in LEAKAGE_METRICS and "max_mia_auc" in LEAKAGE_METRICS


def test_dp_claims_are_tested_inside_the_family_and_never_skipped_silently(tmp_path):
    results = json.loads((FIXTURE / "results.json").read_text())
    dp = next(r for r in results["rows"] if r["generator"] == "dp_vae")
    assert dp["eps_accountant"] > 9 and dp["eps_audit_max"] < 9  # claim 10, out of reach
    verdicts = check(RunDir(FIXTURE), results, load_thresholds())
    claims = [v for v in verdicts if v.metric == "dp_claim"]
    assert [v.row for v in claims] == ["dp_vae-eps10"]  # DP rows only
    assert claims[0].passed and claims[0].status == "uninformative"
    assert "uninformative" in claims[0].line() and "within" not in claims[0].line()

    def alone(row: dict) -> list:
        return check(RunDir(tmp_path), {"rows": [row]}, load_thresholds())

    refuted = {**dp, "dp_claim_p": 1e-6, "dp_claim_p_min": 1e-9}
    (verdict,) = [v for v in alone(refuted) if v.metric == "dp_claim"]
    assert not verdict.passed and verdict.status == "refuted"
    assert verdict.limit == pytest.approx(0.05 / 4) and verdict.n_tests == 1  # its quarter
    assert "refuted by the canary audit" in summary_lines([verdict])[0]
    # significant alone (0.02 < 0.05), not at the claims' share of alpha (0.0125)
    borderline = {**dp, "dp_claim_p": 0.02, "dp_claim_p_min": 1e-9}
    (verdict,) = [v for v in alone(borderline) if v.metric == "dp_claim"]
    assert verdict.passed and verdict.status == "not refuted"
    unaudited = {k: v for k, v in dp.items() if not k.startswith(("dp_claim", "eps_audit"))}
    verdicts = alone(unaudited)
    (verdict,) = [v for v in verdicts if v.metric == "dp_claim"]
    assert verdict.passed and verdict.status == "not audited" and verdict.value is None
    assert "not audited" in verdict.line() and "not audited" in summary_lines(verdicts)[0]
    others = [v for v in verdicts if v.is_test and v.metric != "dp_claim"]
    assert {v.n_tests for v in others} == {6}  # a claim that runs no test takes no alpha
    assert all(v.limit == pytest.approx(0.05 / 6) for v in others)
    informal = {**dp, "dp_formal": False, "dp_claim_p": 1e-6}
    (verdict,) = [v for v in alone(informal) if v.metric == "dp_claim"]
    assert verdict.passed and verdict.status == "not formal"


def test_check_json_agrees_with_the_lines_and_the_results(tmp_path, capsys):
    """`audit check --json`: the same verdict and exit status as the text, each limit's value
    taken from results.json, and strict JSON (no NaN) for jq and pandas."""
    assert main(["check", str(FIXTURE), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    results = json.loads((FIXTURE / "results.json").read_text())
    released = {row_of(r) for r in results["rows"] if r["generator"] not in ("real", "target")}
    assert document["schema_version"] == 2 and document["passed"] is True
    assert set(document["releases"]) == released
    tests = [c for r in document["releases"].values() for c in r["checks"] if c["kind"] == "test"]
    assert tests and all(c["p_value"] is None or c["p_value"] > c["level"] for c in tests)
    (claim,) = [c for c in tests if c["test"] == "dp_claim"]
    assert claim["status"] == "uninformative"
    strict = write(tmp_path / "s.toml", "[thresholds]\nmin_utility = 0.99\nmax_nn_ssim = 0.1\n")
    assert main(["check", str(FIXTURE), "--thresholds", str(strict), "--json"]) == 1
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    document = json.loads(text)
    assert document["passed"] is False
    for row in results["rows"]:
        if row_of(row) in released:
            checks = {c.get("metric"): c for c in document["releases"][row_of(row)]["checks"]}
            assert checks["min_utility"]["value"] == row["utility_acc"]
            assert checks["min_utility"]["passed"] is False


@pytest.mark.slow
def test_the_gate_fails_a_dp_release_that_adds_no_noise(tmp_path):
    """End to end, a positive control: a DP-VAE that claims epsilon 1 but adds no noise (a
    test-only fault), audited with --canaries, FAILs the default gate on its DP claim alone."""
    from audit.core.config import build_config
    from audit.engine.driver import execute
    from reports.verdict import gate_run

    config = build_config(
        preset="smoke",
        generator=("dp_vae",),
        epsilon=(1.0,),
        canaries=20,
        device="cpu",
        out=str(tmp_path / "run"),
        dp={"actual_noise_factor": 0.0},
    )
    run = execute(config)
    _limits, verdicts = gate_run(run)
    failed = [v for v in verdicts if not v.passed]
    assert [(v.row, v.metric, v.status) for v in failed] == [("dp_vae-eps1", "dp_claim", "refuted")]
    assert "refuted by the canary audit" in summary_lines(verdicts)[0]


@pytest.mark.parametrize(
    "case", ["no claims", "only claims", "both", "claims not audited", "claim not formal"]
)
def test_the_tested_levels_never_add_up_to_more_than_alpha(tmp_path, case):
    """Weighted Bonferroni: whatever runs, the levels of the tests that ran sum to alpha at most."""
    results = json.loads((FIXTURE / "results.json").read_text())
    rows = [r for r in results["rows"] if r["generator"] not in ("real", "target")]
    dp = next(r for r in rows if r["generator"] == "dp_vae")
    metrics: tuple[str, ...] = ()
    if case == "no claims":
        rows = [r for r in rows if r is not dp]
    elif case == "only claims":
        metrics = ("dp_claim",)
    elif case == "claims not audited":
        rows = [{k: v for k, v in r.items() if not k.startswith("dp_claim")} for r in rows]
    elif case == "claim not formal":
        rows = [{**r, "dp_formal": False} if r is dp else r for r in rows]
    verdicts = check(RunDir(tmp_path), {"rows": rows}, load_thresholds(), metrics=metrics)
    tested = [v for v in verdicts if v.is_test and v.value is not None]
    assert tested and sum(v.limit for v in tested) <= 0.05 + 1e-12
    if case in ("no claims", "only claims", "claims not audited", "claim not formal"):
        assert sum(v.limit for v in tested) == pytest.approx(0.05)  # one part takes all of it
