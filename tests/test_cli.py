"""The CLI in-process, end to end on the smoke preset (real model, real piq, real files)."""

import csv
import json

import numpy as np
import pytest
import torch

from audit.cli import main
from audit.core.config import build_config
from audit.core.errors import AuditError
from audit.engine.driver import execute
from reports.columns import BASE_COLUMNS
from tests.conftest import SMOKE

BN_ONLY = [*SMOKE, "--generator", "bn_match"]  # tests of other features skip the DP-VAE's time


def test_run_writes_every_artifact(smoke_run):
    for name in (
        "config.json",
        "results.json",
        "results.csv",
        "report.html",
        "split.npz",
        "synthetic/k2.npz",
        "synthetic/k4.npz",
        "target.pt",
    ):
        assert (smoke_run / name).is_file(), name
    with np.load(smoke_run / "synthetic/k4.npz") as synthetic:
        assert synthetic["images"].dtype == np.uint8
        assert synthetic["images"].shape == (20, 16, 16, 1)
        assert synthetic["labels"].shape == (20,)
    with np.load(smoke_run / "split.npz") as split:
        assert set(split.files) == {"members", "nonmembers", "test"}
        assert len(split["members"]) == len(split["nonmembers"]) == 150  # equal by default


def test_dp_row_states_its_guarantee_and_huge_noise_reads_as_chance(smoke_run):
    rows = list(csv.DictReader((smoke_run / "results.csv").open()))
    (dp,) = [r for r in rows if r["generator"] == "dp_vae"]
    assert dp["k"] == "" and float(dp["epsilon"]) == 0.1
    assert 0 < float(dp["eps_accountant"]) <= 0.1
    assert float(dp["dp_noise_multiplier"]) > 5 and dp["dp_accountant"] == "opacus-rdp"
    assert int(dp["dp_steps"]) > 0 and 0 < float(dp["dp_sample_rate"]) <= 1
    for family in ("mia_release", "mia_model"):
        assert float(dp[f"{family}_auc_ci_low"]) <= 0.5 <= float(dp[f"{family}_auc_ci_high"])
    assert (smoke_run / "synthetic/dp_vae-eps0.1.npz").is_file()


def test_results_table(smoke_run):
    rows = list(csv.DictReader((smoke_run / "results.csv").open()))
    assert list(rows[0])[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    assert [(r["generator"], r["k"], r["epsilon"]) for r in rows] == [
        ("bn_match", "2", ""),
        ("bn_match", "4", ""),
        ("dp_vae", "", "0.1"),
        ("real", "", ""),
        ("target", "", ""),
    ]
    rows = [r for r in rows if r["generator"] != "dp_vae"]  # its own test above
    for row in rows[:3]:
        assert 0 <= float(row["nn_ssim_mean"]) <= float(row["nn_ssim_max"]) <= 1
    for row in rows:
        assert 0 <= float(row["utility_acc"]) <= 1
    for row in rows[:3]:  # holdout-relative statistics on the releases and the real baseline
        for metric in ("ssim", "haarpsi"):
            share = float(row[f"holdout_share_{metric}"])
            assert float(row[f"holdout_share_{metric}_ci_low"]) <= share
            assert share <= float(row[f"holdout_share_{metric}_ci_high"])
            assert 0 <= float(row[f"holdout_share_{metric}_p"]) <= 1
            assert 0 < float(row[f"holdout_share_{metric}_expected"]) < 1
            assert int(row[f"copy_count_{metric}"]) <= int(row[f"copy_count_{metric}_images"])
            assert 0 < float(row[f"copy_count_{metric}_expected"]) < 1  # 200 calibration records
        assert row["exact_copies"] == "0"
    assert rows[2]["n_scored"] == "50"  # the real row: 50 held-out images offered as a release
    for row in rows[:2]:  # both attack families' worst-case columns on the synthetic rows
        for family in ("mia_release", "mia_model"):
            assert 0 <= float(row[f"{family}_auc_ci_low"]) <= float(row[f"{family}_auc_ci_high"])
            assert row[f"{family}_attack"] and 0 <= float(row[f"{family}_p"]) <= 1
            # 50 non-members in the evaluation half cannot resolve 1% FPR: not reported
            assert row[f"{family}_tpr_at_1fpr"] == ""
        eps = [float(row["mia_release_eps_lower"]), float(row["mia_model_eps_lower"])]
        assert float(row["eps_lower"]) == max(eps) >= 0
    assert rows[2]["mia_release_auc"] == rows[2]["mia_model_auc"] == ""
    target = rows[3]  # the target's own figures: the model attacks, not the release attacks
    assert target["mia_model_auc"] != "" and target["mia_release_auc"] == ""
    assert target["eps_lower"] == target["mia_model_eps_lower"]
    release = json.loads((smoke_run / "mia_release.json").read_text())["attacks"]
    distances = {"pixel_l2", "ssim", "haarpsi", "feature_l2"}
    calibrated = {f"{d}_calibrated" for d in distances}
    assert set(release["bn_match-k2"]) == distances | calibrated | {"target_feature_l2"}
    model = json.loads((smoke_run / "mia_model.json").read_text())
    assert model["n_references"] == 4 and "LiRA and RMIA ran" in model["note"]
    assert "augmented queries" in model["note"] and model["reference_notes"] == {}
    for row in ("target", "bn_match-k2", "bn_match-k4"):
        assert {
            "loss",
            "loss_class_calibrated",
            "lira_online",
            "lira_offline_fixed_var",
            "rmia_offline",
        } <= set(model["attacks"][row])
        for metrics in model["attacks"][row].values():
            low, high = metrics["auc_ci"]
            assert low <= metrics["auc"] <= high
    for row in rows[:2] + rows[3:]:  # model inversion on the target and the retrained models
        assert 0 <= float(row["inversion_eval_acc"]) <= 1
        assert -1 <= float(row["inversion_nn_ssim_member"]) <= 1
        assert -1 <= float(row["inversion_nn_ssim_nonmember"]) <= 1
    results = json.loads((smoke_run / "results.json").read_text())
    for model_row in ("target", "bn_match-k2", "bn_match-k4"):
        scales = results["features"]["models"][model_row]["scales"]
        assert [s["scale"] for s in scales] == [0.0, 0.1, 0.3, 1.0]
        noisy = [s for s in scales if s["scale"] > 0]
        assert all(s["hcr_median_std"] > 0 for s in noisy)
        assert all(0 <= s["accuracy_on_noisy_features"] <= 1 for s in scales)
    with np.load(smoke_run / "mia/model-target.npz") as scores:  # per-record scores for the report
        # every member (150) and non-member (150) is a candidate
        assert scores["candidates"].shape == scores["score_lira_online"].shape == (300,)
        assert scores["is_member"].sum() == 150
    results = json.loads((smoke_run / "results.json").read_text())
    assert set(results["target"]) >= {"acc_members", "acc_nonmembers", "acc_test"}


def test_config_records_provenance(smoke_run):
    manifest = json.loads((smoke_run / "config.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 0 and manifest["config"]["k"] == [2, 4]
    assert torch.__version__.startswith(manifest["environment"]["packages"]["torch"])
    assert manifest["environment"]["packages"]["piq"]
    stages = {"split", "target", "generate", "privacy", "utility", "mia_refs", "mia_release"}
    assert stages | {"mia_model", "inversion", "features", "report"} <= set(manifest["timings_s"])


def test_report_warns_about_private_images(smoke_run):
    html = (smoke_run / "report.html").read_text()
    assert "This report shows private images" in html
    assert "<script" not in html
    # every private image shown is kept in exhibits.npz, so `audit report` can re-render it
    with np.load(smoke_run / "exhibits.npz") as exhibits:
        assert 0 < len(exhibits["index"]) <= html.count('class="private"')
        assert exhibits["images"].shape == (len(exhibits["index"]), 16, 16, 1)
    assert "lira_online" in html  # the reference attacks ran (--mia-refs 4)
    # the reconstruction tables: one inversion row per model and variant, one HCR row per scale
    assert "<h3>Model inversion</h3>" in html and "the HCR bound</h3>" in html
    models = 4  # the target and the models retrained on bn_match-k2, -k4 and dp_vae-eps0.1
    assert html.count('<td class="l">miface</td>') == models
    assert html.count("n/a (no noise)") == models


def test_redacted_report_shows_no_members(tmp_path):
    out = tmp_path / "r"
    assert main([*BN_ONLY, "--k", "1", "--redact-originals", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "private images are redacted" in html.lower()
    assert 'class="private"' not in html and 'class="redacted"' in html
    assert not (out / "exhibits.npz").exists()  # no private image kept for re-rendering


USER_MODELS = "tests.fixtures.user_models"


@pytest.mark.parametrize(
    "args, match",
    [
        (["--dataset", "svhn"], "unknown dataset"),
        (["--dataset", "imagefolder", "--data-root", "/nonexistent/x"], "not a directory"),
        (["--dataset", "cifar10"], "needs --data-root"),
        (["--k", "0"], "--k"),
        (["--k", "-5"], "--k"),
        (["--k", "abc"], "--k"),
        (["--k"], "--k"),
        (["--model", "nin_cifar10"], "no BatchNorm"),
        (["--model", "resnet18"], "not a pytorchcv CIFAR model"),
        (["--weights", "/nonexistent.pt"], "does not exist"),
        (["--device", "tpu"], "--device"),
        (["--similarity-levels", "1.5"], "similarity-levels"),
        (["--mia-refs", "1"], "--mia-refs"),
        (["--synthetic", "/nonexistent.npz"], "does not exist"),
        (["--synthetic", "/nonexistent.npz", "--k", "3"], "--k"),
        (["--split", "/nonexistent.npz"], "--split"),
        (["--max-members", "0"], "--max-members"),
        (["--real-utility-seeds", "0"], "--real-utility-seeds"),
        (["--max-nonmembers", "2"], "--max-nonmembers must be at least 3"),
        (["--attacker-weights", "/nonexistent.pt"], "--attacker-weights file"),
        (["--epsilon", "0"], "--epsilon"),
        (["--epsilon", "-1"], "--epsilon"),
        (["--epsilon", "nan"], "--epsilon"),
        (["--epsilon", "inf"], "--epsilon"),
        (["--delta", "0"], "--delta"),
        (["--delta", "1"], "--delta"),
        (["--delta", "nan"], "--delta"),
        (["--generator", "gan"], "unknown generator"),
        (["--generator", "dp_vae", "dp_vae"], "once"),
        (["--canaries", "1"], "--canaries"),
        (["--canaries", "-3"], "--canaries"),
        (["--gradient-canaries", "-1"], "--gradient-canaries"),
        (
            ["--generator", "dp2_vae", "--dp-epochs", "1"],
            "--dp-epochs (vae.epochs) must be at least 2",
        ),
        (["--dp-clip", "0"], "clip"),
        (["--generator", "dp_vae", "--image-size", "18"], "divisible by 4"),
        (["--model", f"{USER_MODELS}:no_bn_cnn"], "no BatchNorm"),
        (["--model", f"{USER_MODELS}:fixed_size_mlp"], "does not fit 1-channel 16x16 images"),
        (["--model", f"{USER_MODELS}:not_a_module"], "not a torch nn.Module"),
        (["--model", f"{USER_MODELS}:missing"], "has no function missing"),
        (["--model", "no_such_module_xyz:build"], "cannot import no_such_module_xyz"),
        (["--config", "/nonexistent.toml"], "cannot read config file"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, match):
    out = tmp_path / "bad"
    assert main([*SMOKE, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert match in err
    assert not out.exists()


def test_weights_that_do_not_fit(tmp_path, capsys):
    from audit.core.models import build_model

    path = tmp_path / "rgb.pt"
    torch.save(
        build_model("resnet20_cifar10", channels=3, num_classes=10, seed=0).state_dict(), path
    )
    assert main([*SMOKE, "--weights", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and len(err.strip().splitlines()) == 1


def test_corrupt_data_root(tmp_path, capsys):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    for part in ("train", "test"):
        (tmp_path / part / "cat" / "0.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    assert (
        main(
            [
                *SMOKE,
                "--dataset",
                "imagefolder",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "cannot read image" in capsys.readouterr().err


def test_out_that_is_not_a_run_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")  # an earlier run resumes (test_resume.py)
    assert main([*SMOKE, "--out", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_nan_mid_run_leaves_nothing_final(tmp_path):
    config = build_config(preset="smoke", out=str(tmp_path / "nan"), bn={"lr": 1e12})
    with pytest.raises(AuditError, match=r"diverged|NaN"):
        execute(config)
    manifest = json.loads((tmp_path / "nan" / "config.json").read_text())
    assert manifest["status"] == "failed" and "BN matching" in manifest["error"]
    for name in ("results.json", "results.csv", "report.html"):
        assert not (tmp_path / "nan" / name).exists()


def test_run_on_real_cifar_jpeg_folder(cifar_folder, tmp_path):
    """RGB, 32 px, 3 classes (a replaced head), flip augmentation: imagefolder end to end."""
    out = tmp_path / "cifar"
    args = ["--dataset", "imagefolder", "--data-root", str(cifar_folder), "--n-synthetic", "30"]
    assert main([*BN_ONLY, *args, "--out", str(out)]) == 0
    with np.load(out / "synthetic/k4.npz") as synthetic:
        assert synthetic["images"].shape == (30, 32, 32, 3)
        assert np.bincount(synthetic["labels"]).tolist() == [10, 10, 10]
    manifest = json.loads((out / "config.json").read_text())
    assert manifest["config"]["target"]["hflip"] is True
    with np.load(out / "split.npz") as split:
        assert split["test"].min() >= 120  # the test split comes from the folder's test part


def test_privacy_stage_finds_a_planted_member(smoke_run, tmp_path):
    """Copy two members into a release and re-run the privacy stage on a copy of the run."""
    import shutil

    from audit.core.data import load_dataset
    from audit.core.store import RunDir
    from audit.engine.context import TaskContext
    from audit.tasks.privacy import privacy_of_release

    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir)
    manifest = json.loads((run_dir / "config.json").read_text())
    config = build_config(preset="smoke", out=str(run_dir), mia_refs=4, epsilon=(0.1,))
    assert config.digest() == manifest["config_digest"]
    data = load_dataset("digits", None, image_size=16)
    with np.load(run_dir / "split.npz") as split:
        members = split["members"]
    with np.load(run_dir / "synthetic/k2.npz") as synthetic:
        images, labels = synthetic["images"].copy(), synthetic["labels"]
    images[3], images[11] = data.images[members[17]], data.images[members[120]]
    np.savez(run_dir / "synthetic/k2.npz", images=images, labels=labels)
    # the release's task alone, as the serial executor runs it (the holdout row is on disk)
    ctx = TaskContext(config, data, RunDir(run_dir))
    row = privacy_of_release(ctx, "synthetic/k2.npz", "bn_match-k2")
    with np.load(run_dir / "privacy/bn_match-k2.npz") as found:
        for metric in ("ssim", "haarpsi"):
            assert found[f"{metric}_values"][[3, 11]].min() > 0.999
            assert found[f"{metric}_index"][[3, 11]].tolist() == [members[17], members[120]]
            topk = found[f"{metric}_topk_values"]
            assert topk.shape == (20, 3) and (np.diff(topk, axis=1) <= 0).all()
            assert found[f"{metric}_topk_member"][3, 0] == 17
    assert row["nn_ssim_max"] > 0.999 and row["nn_ssim_frac_above_0_9"] == pytest.approx(2 / 20)
    assert row["exact_copies"] == 2  # and the planted copies are exact copies
    with np.load(run_dir / "privacy/bn_match-k2.npz") as found:
        assert found["exact_copy_released"].tolist() == [3, 11]
        assert found["exact_copy_index"].tolist() == [members[17], members[120]]


def test_variant_flags_reach_the_config_and_results(tmp_path):
    out = tmp_path / "variant"
    flags = ["--k", "3", "--bn-loss", "zeroq", "--bn-clamp-pixels", "--bn-groups-per-pass", "1"]
    seeds = ["--utility-seeds", "2", "--real-utility-seeds", "1"]
    assert main([*BN_ONLY, *flags, *seeds, "--out", str(out)]) == 0
    bn = json.loads((out / "config.json").read_text())["config"]["bn"]
    assert (bn["statistics"], bn["spread"], bn["norm"], bn["ce_weight"]) == (
        "image",
        "std",
        "squared",
        0,
    )
    assert bn["clamp_pixels"] is True and bn["groups_per_pass"] == 1
    rows = list(csv.DictReader((out / "results.csv").open()))
    releases = [row for row in rows if row["generator"] not in ("target", "real")]
    assert releases and all(row["utility_acc_std"] != "" for row in releases)
    utility = json.loads((out / "utility.json").read_text())["rows"]
    assert len(utility.pop("real")["utility_accs"]) == 1
    assert utility and all(len(row["utility_accs"]) == 2 for row in utility.values())


def _write_set(path, images, labels):
    np.savez(path, images=images, labels=labels)
    return str(path)


def test_external_set_is_audited_as_a_row(smoke_run, tmp_path):
    """An existing set (here: members plus slight noise, a planted leak) audited with the run's
    own split: every privacy, utility and attack measure runs on the 'external' row."""
    from audit.core.data import load_dataset

    data = load_dataset("digits", None, image_size=16)
    with np.load(smoke_run / "split.npz") as split:
        members = split["members"]
    noise = np.random.default_rng(0).integers(-4, 5, data.images[members].shape)
    leaked = np.clip(data.images[members].astype(int) + noise, 0, 255).astype(np.uint8)
    path = _write_set(tmp_path / "leak.npz", leaked, data.labels[members])
    out = tmp_path / "ext"
    split_file = str(smoke_run / "split.npz")
    assert main([*SMOKE, "--synthetic", path, "--split", split_file, "--out", str(out)]) == 0
    rows = {r["generator"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"external", "real", "target"}
    external = rows["external"]
    assert external["k"] == "" and external["n_synthetic"] == "150"
    assert float(external["nn_ssim_mean"]) > 0.9
    assert float(external["mia_release_auc"]) > 0.95  # every member leaked
    # every member is in the pool, so each copy finds its own source nearest, and each stands
    # out as a copy against the records never used
    assert float(external["holdout_share_ssim"]) > 0.95
    assert float(external["holdout_share_ssim_p"]) < 1e-3
    assert int(external["copy_count_ssim"]) > 140 and float(external["copy_count_ssim_p"]) < 1e-9
    assert external["utility_acc"] != "" and external["mia_model_auc"] != ""
    with np.load(out / "split.npz") as split, np.load(smoke_run / "split.npz") as original:
        assert all(np.array_equal(split[k], original[k]) for k in original.files)


def test_external_image_folder(tmp_path):
    from PIL import Image

    from audit.core.data import load_dataset

    data = load_dataset("digits", None, image_size=16)
    for i in range(12):
        label = int(data.labels[i])
        folder = tmp_path / "set" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i, :, :, 0]).save(folder / f"{i}.png")
    out = tmp_path / "o"
    assert main([*SMOKE, "--synthetic", str(tmp_path / "set"), "--out", str(out)]) == 0
    with np.load(out / "synthetic/external-set.npz") as synthetic:
        assert synthetic["images"].shape == (12, 16, 16, 1)
        assert synthetic["labels"].tolist() == sorted(data.labels[:12].tolist())


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((5, 16, 16, 3), np.uint8), np.zeros(5, int), "channels"),
        (np.zeros((5, 8, 8, 1), np.uint8), np.zeros(5, int), "8x8"),
        (np.zeros((5, 16, 16), np.uint8), np.zeros(5, int), "N x H x W x C"),
        (np.zeros((5, 16, 16, 1), np.float32), np.zeros(5, int), "uint8"),
        (np.zeros((5, 16, 16, 1), np.uint8), np.full(5, 10), "labels must lie in"),
        (np.zeros((5, 16, 16, 1), np.uint8), np.zeros(4, int), "labels must be 5 integers"),
        (np.zeros((0, 16, 16, 1), np.uint8), np.zeros(0, int), "empty"),
    ],
)
def test_bad_external_set(tmp_path, capsys, images, labels, match):
    path = _write_set(tmp_path / "bad.npz", images, labels)
    out = tmp_path / "o"
    assert main([*SMOKE, "--synthetic", path, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()


def test_bad_external_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    (tmp_path / "folder" / "eleven").mkdir(parents=True)
    keys = tmp_path / "keys.npz"
    np.savez(keys, pixels=np.zeros((2, 16, 16, 1), np.uint8))
    for path, match in (
        (garbage, "not a readable .npz"),
        (keys, "lacks images and labels"),
        (tmp_path / "folder", "not in the dataset: eleven"),
    ):
        assert main([*SMOKE, "--synthetic", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err


def test_bad_split_file(tmp_path, capsys):
    overlap = tmp_path / "overlap.npz"
    np.savez(overlap, members=np.arange(10), nonmembers=np.arange(5, 15), test=np.arange(20, 30))
    outside = tmp_path / "outside.npz"
    np.savez(outside, members=np.arange(10), nonmembers=np.arange(10, 20), test=[5000])
    for path, match in ((overlap, "overlap"), (outside, "outside")):
        assert main([*SMOKE, "--split", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err


def test_pretrained_checkpoint_split_follows_what_it_was_trained_on(cifar_folder, tmp_path, capsys):
    """A bare pytorchcv checkpoint saw the whole train part: members are that part, non-members
    and test halves of the test part; the run says so in its output, results.json and report."""
    from audit.core.models import build_model

    checkpoint = tmp_path / "resnet20_cifar10-bare.pth"
    net = build_model("resnet20_cifar10", channels=3, num_classes=3, seed=3).net
    torch.save(net.state_dict(), checkpoint)
    out = tmp_path / "pretrained"
    args = ["--dataset", "imagefolder", "--data-root", str(cifar_folder), "--n-synthetic", "12"]
    assert main([*BN_ONLY, *args, "--weights", str(checkpoint), "--out", str(out)]) == 0
    assert "bare pytorchcv checkpoint" in capsys.readouterr().err
    with np.load(out / "split.npz") as split:
        assert split["members"].tolist() == list(range(120))  # the whole train part
        assert len(split["nonmembers"]) == len(split["test"]) == 15  # halves of the test part
        assert split["nonmembers"].min() >= 120 and split["test"].min() >= 120
        assert not set(split["nonmembers"]) & set(split["test"])
    results = json.loads((out / "results.json").read_text())
    assert "bare pytorchcv checkpoint" in results["notes"]["membership"]
    assert 'id="membership-note"' in (out / "report.html").read_text()


def test_other_weights_state_the_membership_assumption(smoke_run):
    from audit.core.data import load_dataset
    from audit.tasks.split import ASSUMED_NOTE, membership_basis

    data = load_dataset("digits", None, image_size=16)
    suite_weights = build_config(preset="smoke", weights=str(smoke_run / "target.pt"))
    assert membership_basis(suite_weights, data) == (False, ASSUMED_NOTE)
    given_split = build_config(
        preset="smoke",
        weights=str(smoke_run / "target.pt"),
        split=str(smoke_run / "split.npz"),
    )
    assert membership_basis(given_split, data) == (False, None)
    assert membership_basis(build_config(preset="smoke"), data) == (False, None)


def test_help_states_every_default():
    """Every option that takes a value says what happens without it (issue 17), and the preset
    defaults it quotes are the presets' own."""
    import argparse

    from audit.arguments import build_parser
    from audit.core.presets import PRESETS

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, command in commands.choices.items()
        for action in command._actions
        if action.option_strings
        and action.nargs != 0  # flags (store_true) have no value to default
        and "default" not in (action.help or "")
    ]
    assert silent == []
    text = commands.choices["run"].format_help().replace("\n", " ")
    text = " ".join(text.split())
    ks = " ".join(map(str, PRESETS["paper"]["k"]))
    assert f"paper {ks}" in text and f"quick {PRESETS['quick']['n_synthetic']}" in text
