"""Holdout-relative privacy statistics and the default gate on real images (digits and a CIFAR-10
subset from the shared archive): held-out images offered as a release pass, member copies fail.

Run with -s to see each planted case's figures (the closing note of issue 13 quotes them)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from attacks.metrics import select_strongest, selection_halves
from attacks.release import nearest_l2, penultimate_features, release_scores
from audit.config import TrainConfig
from audit.errors import AuditError
from audit.holdout import (
    choose_holdout,
    copy_share,
    copy_threshold,
    exact_copies,
    holdout_share_test,
    memorisation_statistics,
)
from audit.models import build_model
from audit.similarity import nearest_neighbours
from audit.store import RunDir
from audit.training import accuracy
from reports.thresholds import check, load_thresholds, summary_lines
from tests.conftest import fit_on

PRIVACY_CHECKS = (
    "max_exact_copies",
    "holdout_share_ssim",
    "holdout_share_haarpsi",
    "copy_share_ssim",
    "copy_share_haarpsi",
)


# --------------------------------------------------------------------------- the statistics


def test_holdout_share_counts_ties_half():
    # pool: positions 0-1 the member sample, 2-3 the holdout
    top_values = np.array([[0.9, 0.8], [0.5, 0.5], [0.7, 0.6], [0.2, 0.1]])
    top_positions = np.array([[0, 2], [1, 3], [3, 0], [2, 1]])
    share = holdout_share_test(top_values, top_positions, 2, 4, np.random.default_rng(0), 200)
    assert share.share == pytest.approx(1.5 / 4) and share.n == 4
    assert share.ci_low <= share.share <= share.ci_high
    assert share.p_binomial == pytest.approx(15 / 16)  # P(Binomial(4, 0.5) >= 1), half rounded down
    with pytest.raises(ValueError):
        holdout_share_test(top_values, top_positions, 2, 3, np.random.default_rng(0))


def test_holdout_share_permutation_test_holds_with_hub_images():
    """Released images that are not independent: each finds one of a few 'hub' pool images
    nearest, whatever their membership. The binomial test then rejects far more often than its
    level; relabelling the pool at random (the permutation test) keeps it."""
    rng = np.random.default_rng(0)
    permutation_rejections, binomial_rejections = 0, 0
    for _ in range(200):
        hubs = rng.choice(200, 6, replace=False)  # pool: 100 member sample + 100 holdout
        nearest = rng.choice(hubs, 100)
        top_positions = np.stack([nearest, (nearest + 1) % 200], axis=1)
        top_values = np.stack([np.full(100, 0.9), np.full(100, 0.8)], axis=1)
        share = holdout_share_test(top_values, top_positions, 100, 200, rng, permutations=400)
        permutation_rejections += share.p_value < 0.05
        binomial_rejections += share.p_binomial < 0.05
    assert permutation_rejections / 200 <= 0.08
    assert binomial_rejections / 200 >= 0.2


def test_holdout_share_detects_a_release_near_the_members():
    rng = np.random.default_rng(1)
    nearest = np.where(
        rng.random(300) < 0.7, rng.integers(0, 150, 300), rng.integers(150, 300, 300)
    )
    top_positions = np.stack([nearest, (nearest + 7) % 300], axis=1)
    top_values = np.stack([np.full(300, 0.95), np.full(300, 0.5)], axis=1)
    share = holdout_share_test(top_values, top_positions, 150, 300, rng, permutations=2000)
    assert share.share == pytest.approx((nearest < 150).mean())
    assert share.p_value == pytest.approx(1 / 2001) and share.expected == pytest.approx(
        0.5, abs=0.01
    )


def test_holdout_sets_are_disjoint_and_sized():
    nonmembers = np.arange(1000, 1539)
    sets = choose_holdout(nonmembers, 719, np.random.default_rng(0), max_holdout=5000, max_real=500)
    assert len(sets.holdout) == 270 and len(sets.member_sample) == 270
    assert len(sets.real_release) == 269 and not set(sets.holdout) & set(sets.real_release)
    assert set(sets.holdout) | set(sets.real_release) == set(nonmembers)
    capped = choose_holdout(nonmembers, 100, np.random.default_rng(0), max_holdout=50, max_real=30)
    assert (len(capped.holdout), len(capped.member_sample), len(capped.real_release)) == (
        50,
        50,
        30,
    )
    with pytest.raises(AuditError, match="at least 2 non-members"):
        choose_holdout(nonmembers[:1], 10, np.random.default_rng(0), max_holdout=5, max_real=5)


def test_copy_threshold_is_the_conformal_quantile():
    calibration = np.arange(1, 300.0)  # 299 held-out scores
    threshold, rank = copy_threshold(calibration)
    assert rank == 297 and threshold == 297.0  # ceil(0.99 * 300)
    few = np.arange(10.0)
    assert copy_threshold(few) == (9.0, 10)  # fewer than 99: the max


def test_copy_share_null_is_calibrated():
    """Released and held-out scores from one distribution: over many draws the p-value is
    (conservatively) uniform, so a level-0.05 test rejects at most about 5% of the time, even
    though every released image shares one estimated threshold (the beta-binomial's job)."""
    rng = np.random.default_rng(0)
    rejections, shares = 0, []
    for _ in range(400):
        test, _ = copy_share(rng.normal(size=200), rng.normal(size=150))
        rejections += test.p_value < 0.05
        shares.append(test.share)
    assert rejections / 400 <= 0.07
    assert np.mean(shares) == pytest.approx(test.expected, abs=0.004)
    assert test.expected <= 0.01


def test_exact_copies_within_two_grey_levels():
    rng = np.random.default_rng(1)
    members = rng.integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    released = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    released[3] = np.clip(members[7].astype(int) + rng.integers(-2, 3, members[7].shape), 0, 255)
    released[11] = members[40]
    off = members[5].astype(int)
    off[0, 0, 0] = off[0, 0, 0] + 3 if off[0, 0, 0] < 250 else off[0, 0, 0] - 3  # one pixel off
    released[15] = off
    positions, matched = exact_copies(released, members)
    assert positions.tolist() == [3, 11] and matched.tolist() == [7, 40]
    flat = np.zeros((4, 16, 16, 1), np.uint8)  # constant images: every pair survives pruning
    assert exact_copies(flat, flat)[1].tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------- planted releases


def nearest_member(images: np.ndarray, members: np.ndarray) -> dict:
    return {
        metric: nearest_neighbours(images, members, metric, progress=False)[0][:, 0]
        for metric in ("ssim", "haarpsi")
    }


def privacy_row(released: np.ndarray, parts: dict[str, np.ndarray], calibration: dict) -> dict:
    """The privacy columns of a released set against members / member sample / holdout, as the
    pipeline computes them (calibration: the holdout's nearest-member scores)."""
    members, holdout = parts["members"], parts["holdout"]
    to_members = nearest_member(released, members)
    summary, _ = memorisation_statistics(
        released,
        to_members,
        members=members,
        member_sample=parts["member_sample"],
        holdout=holdout,
        calibration=calibration,
        rng=np.random.default_rng(0),
    )
    return {"generator": "planted", "k": None, **summary}


def gate(rows: dict[str, dict], tmp_path: Path) -> dict[str, list]:
    """The shipped default thresholds' privacy checks, applied to the planted rows together (the
    Bonferroni level counts every row's tests)."""
    results = {"rows": [{**row, "generator": name} for name, row in rows.items()]}
    verdicts = check(RunDir(tmp_path), results, load_thresholds(), metrics=PRIVACY_CHECKS)
    assert {v.metric for v in verdicts} == set(PRIVACY_CHECKS)
    for line in summary_lines(verdicts):
        print(line)
    return {name: [v for v in verdicts if v.row == name] for name in rows}


def noisy(images: np.ndarray, rng: np.random.Generator, spread: int = 8) -> np.ndarray:
    """Slightly noisy copies: up to +-spread grey levels per pixel (beyond the exact-copy
    tolerance of +-2 almost everywhere)."""
    noise = rng.integers(-spread, spread + 1, images.shape)
    return np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)


def planted_cases(parts: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fresh, members = parts["fresh"], parts["members"]
    n = len(fresh)
    copied = members[rng.choice(len(members), n, replace=False)]
    mixed = fresh.copy()
    tenth = rng.choice(n, n // 10, replace=False)
    mixed[tenth] = noisy(copied[: len(tenth)], rng)
    one_copy = fresh.copy()
    one_copy[0] = members[int(rng.integers(len(members)))]
    return {
        "held_out": fresh,
        "noisy_copies": noisy(copied, rng),
        "mixed_10pct": mixed,
        "one_exact_copy": one_copy,
    }


def split_parts(images: np.ndarray, n_members: int, n_holdout: int, seed: int = 0) -> dict:
    """members, an equally sized member sample beside the holdout, the holdout and fresh
    held-out images to offer as a release, all disjoint draws of one dataset."""
    order = np.random.default_rng(seed).permutation(len(images))
    members = images[order[:n_members]]
    holdout = images[order[n_members : n_members + n_holdout]]
    fresh = images[order[n_members + n_holdout : n_members + 2 * n_holdout]]
    sample = members[np.random.default_rng(seed + 1).choice(n_members, n_holdout, replace=False)]
    return {"members": members, "member_sample": sample, "holdout": holdout, "fresh": fresh}


def assert_planted_verdicts(parts: dict, tmp_path: Path) -> dict[str, dict]:
    calibration = nearest_member(parts["holdout"], parts["members"])
    rows = {
        name: privacy_row(images, parts, calibration)
        for name, images in planted_cases(parts).items()
    }
    verdicts = gate(rows, tmp_path)
    for name, row in rows.items():
        print(
            f"{name}: holdout share SSIM {row['holdout_share_ssim']:.3f} "
            f"(p {row['holdout_share_ssim_p']:.2g}), HaarPSI {row['holdout_share_haarpsi']:.3f} "
            f"(p {row['holdout_share_haarpsi_p']:.2g}); copy share SSIM "
            f"{row['copy_share_ssim']:.3f} (p {row['copy_share_ssim_p']:.2g}), HaarPSI "
            f"{row['copy_share_haarpsi']:.3f} (p {row['copy_share_haarpsi_p']:.2g}); "
            f"exact copies {row['exact_copies']}"
        )
    failed = {name: [v.metric for v in vs if not v.passed] for name, vs in verdicts.items()}
    assert failed["held_out"] == [], failed  # fresh real images leak nothing: PASS
    assert rows["held_out"]["exact_copies"] == 0
    assert {"holdout_share_ssim", "copy_share_ssim"} <= set(failed["noisy_copies"])
    assert rows["noisy_copies"]["exact_copies"] == 0  # caught by the statistics, not as copies
    assert (
        "copy_share_ssim" in failed["mixed_10pct"] or "copy_share_haarpsi" in failed["mixed_10pct"]
    )
    assert failed["one_exact_copy"] == ["max_exact_copies"]
    assert rows["one_exact_copy"]["exact_copies"] == 1
    return rows


def test_planted_releases_on_digits(digits, tmp_path):
    parts = split_parts(digits.images, n_members=700, n_holdout=300)
    assert_planted_verdicts(parts, tmp_path)


@pytest.fixture(scope="session")
def cifar_subset() -> tuple[np.ndarray, np.ndarray]:
    """1,200 real CIFAR-10 training images (120 per class), read straight from the archive
    (sequentially: the .tar.gz has no index)."""
    from PIL import Image

    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip("shared/data/cifar10-jpeg.tar.gz is not beside the repository")
    per_class = 120
    images, labels, counts = [], [], {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-3] != "train" or not member.isfile():
                continue
            label = parts[-2]
            if counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            data = tar.extractfile(member)
            assert data is not None
            images.append(np.asarray(Image.open(io.BytesIO(data.read())).convert("RGB")))
            labels.append(label)
            if len(counts) == 10 and all(c >= per_class for c in counts.values()):
                break
    classes = sorted(counts)
    return np.stack(images), np.array([classes.index(label) for label in labels])


def test_planted_releases_on_cifar10(cifar_subset, tmp_path):
    images, _labels = cifar_subset
    assert images.shape == (1200, 32, 32, 3)
    parts = split_parts(images, n_members=300, n_holdout=150)  # 32x32 RGB: fewer pairs
    assert_planted_verdicts(parts, tmp_path)


@pytest.mark.slow
def test_overfit_target_does_not_make_a_held_out_release_leak(digits):
    """A target that memorised its 300 members (train accuracy 1) and a release of 300 held-out
    images it never saw: the release attack, in features the attacker could hold (a model
    trained on population records), is at chance. The same distance in the target's own
    features is the insider diagnostic: it sees the target's overfitting, not the release."""
    order = np.random.default_rng(0).permutation(len(digits.images))
    members, nonmembers = order[:300], order[300:600]
    released, population = order[600:900], order[900:1300]
    target = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    fit_on(target, digits, members, TrainConfig(epochs=30, crop_padding=0), stream="overfit")
    assert accuracy(target, digits.images[members], digits.labels[members], device="cpu") == 1.0
    extractor = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=1)
    fit_on(extractor, digits, population, TrainConfig(epochs=10), stream="population")
    candidates = digits.images[np.r_[members, nonmembers]]
    is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    release = digits.images[released]
    scores = release_scores(
        candidates,
        release,
        candidate_features=penultimate_features(extractor, candidates, device="cpu"),
        synthetic_features=penultimate_features(extractor, release, device="cpu"),
        device="cpu",
    )
    rng = np.random.default_rng(0)
    chosen = select_strongest(scores, is_member, selection_halves(is_member, rng), rng=rng)
    low, high = chosen.metrics.auc_ci
    insider = -nearest_l2(
        penultimate_features(target, candidates, device="cpu"),
        penultimate_features(target, release, device="cpu"),
    )
    insider_auc = select_strongest(
        {"target_feature_l2": insider}, is_member, selection_halves(is_member, rng), rng=rng
    ).metrics.auc
    print(
        f"held-out release, overfit target: strongest release attack {chosen.attack} AUC "
        f"{chosen.metrics.auc:.3f} (95% CI {low:.3f}-{high:.3f}, p {chosen.metrics.p_value:.2g}); "
        f"in the target's features (insider) AUC {insider_auc:.3f}"
    )
    assert low <= 0.5 <= high
    assert chosen.metrics.p_value > 0.05 / 6
