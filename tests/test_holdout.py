"""Holdout-relative privacy statistics and the default gate on real images (digits and a CIFAR-10
subset from the shared archive): held-out images offered as a release pass, member copies fail.

Run with -s to see each planted case's figures (the closing note of issue 13 quotes them)."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from attacks.metrics import select_strongest, selection_halves
from attacks.release import nearest_l2, penultimate_features, release_scores
from audit.core.copies import exact_copies
from audit.core.errors import AuditError
from audit.core.holdout import (
    choose_holdout,
    copy_count_test,
    holdout_share_test,
    nearest_in_pool,
    pool_order,
    stand_out_ratio,
)
from audit.core.memorisation import (
    METRICS,
    Yardstick,
    calibration_ratios,
    make_yardstick,
    release_statistics,
)
from audit.core.models import build_model
from audit.core.sections import TrainConfig
from audit.core.store import RunDir
from audit.core.training import accuracy
from reports.thresholds import check, load_thresholds
from reports.verdict import summary_lines
from tests.conftest import fit_on

PRIVACY_CHECKS = (
    "max_exact_copies",
    "holdout_share_ssim",
    "holdout_share_haarpsi",
    "copy_count_ssim",
    "copy_count_haarpsi",
)


# --------------------------------------------------------------------------- the statistics


def test_holdout_share_with_unequal_sides():
    # pool: positions 0-5 members, 6-7 the holdout; chance is 6/8
    nearest = np.array([0, 1, 6, 2])
    share = holdout_share_test(nearest, 6, 8, np.random.default_rng(0), 2000)
    assert share.share == pytest.approx(0.75) and share.n == 4
    assert share.expected == pytest.approx(0.75)
    assert share.ci_low <= share.share <= share.ci_high
    assert 0.4 < share.p_value < 0.9  # 3 of 4 nearest a member is what chance gives
    with pytest.raises(ValueError):
        holdout_share_test(nearest, 6, 6, np.random.default_rng(0))


def test_holdout_share_permutation_test_holds_with_hub_images():
    """Released images that are not independent: each finds one of a few 'hub' pool images
    nearest, whatever their membership. Relabelling the pool at random (the permutation test)
    keeps the level; a binomial test on the share would not."""
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(200):
        hubs = rng.choice(300, 6, replace=False)  # pool: 200 members + 100 held out
        share = holdout_share_test(rng.choice(hubs, 100), 200, 300, rng, permutations=400)
        rejections += share.p_value < 0.05
    assert rejections / 200 <= 0.08


def test_holdout_share_detects_a_release_near_the_members():
    rng = np.random.default_rng(1)
    nearest = np.where(
        rng.random(300) < 0.9, rng.integers(0, 200, 300), rng.integers(200, 300, 300)
    )
    share = holdout_share_test(nearest, 200, 300, rng, permutations=2000)
    assert share.share == pytest.approx((nearest < 200).mean())
    assert share.p_value == pytest.approx(1 / 2001)
    assert share.expected == pytest.approx(2 / 3)


def test_ties_do_not_favour_members():
    """A tie-heavy pool: every query's nearest member and nearest held-out record score the
    same (blank images). The random pool order decides, so about |M| / (|M| + |H|) of them go
    to the members, and the share test does not reject; breaking ties by pool position (members
    first) gave every tie to the members."""
    n_members, n_holdout, n = 200, 200, 400
    rank = pool_order(n_members, n_holdout, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    members_hit, holdout_hit = rng.integers(0, n_members, n), rng.integers(0, n_holdout, n)
    same = np.full(n, 0.7)
    nearest = nearest_in_pool(same, members_hit, same, holdout_hit, rank, n_members)
    share = holdout_share_test(nearest, n_members, n_members + n_holdout, rng)
    assert 0.4 < share.share < 0.6
    assert share.p_value > 0.05


def test_stand_out_ratio():
    ratio = stand_out_ratio(np.array([1.0, 0.9, 0.5, 1.0, 0.2]), np.array([0.6, 0.9, 0.75, 1, 1]))
    assert ratio.tolist()[:3] == pytest.approx([0.0, 1.0, 2.0])
    assert ratio[3] == 1.0 and np.isinf(ratio[4])  # equal to both; to a held-out record only


def test_copy_count_null_is_calibrated():
    """Released and calibration ratios from one distribution: over many draws a level-0.05 test
    rejects at most about 5% of the time, although every released image shares one estimated
    threshold (the beta-binomial's job)."""
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(400):
        ratios = rng.lognormal(size=200)
        test = copy_count_test(ratios, np.arange(200), rng.lognormal(size=300))
        rejections += test.p_value < 0.05
    assert rejections / 400 <= 0.07
    assert test.expected == pytest.approx(200 / 301)


def test_copy_count_counts_distinct_members():
    calibration = np.linspace(0.3, 1.5, 1000)
    ratios = np.full(500, 0.9)
    ratios[:5] = 0.01  # five copies of five members
    test = copy_count_test(ratios, np.arange(500), calibration)
    assert (test.count, test.images) == (5, 5) and test.p_value < 0.005
    collapsed = copy_count_test(ratios, np.zeros(500, int), calibration)  # all of one member
    assert collapsed.count == 1 and collapsed.p_value > 0.3


def test_holdout_sets_are_disjoint_and_sized():
    nonmembers = np.arange(1000, 1539)
    sets = choose_holdout(nonmembers, 719, np.random.default_rng(0), max_holdout=5000, max_real=500)
    assert len(sets.holdout) == 270 and len(sets.member_sample) == 719  # every member calibrates
    assert len(sets.real_release) == 269 and not set(sets.holdout) & set(sets.real_release)
    assert set(sets.holdout) | set(sets.real_release) == set(nonmembers)
    capped = choose_holdout(nonmembers, 100, np.random.default_rng(0), max_holdout=50, max_real=30)
    assert (len(capped.holdout), len(capped.member_sample), len(capped.real_release)) == (
        50,
        50,
        30,
    )
    with pytest.raises(AuditError, match="at least 3 non-members"):
        choose_holdout(nonmembers[:1], 10, np.random.default_rng(0), max_holdout=5, max_real=5)


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


def noisy(images: np.ndarray, rng: np.random.Generator, spread: int = 8) -> np.ndarray:
    """Slightly noisy copies: up to +-spread grey levels per pixel (beyond the exact-copy
    tolerance of +-2 almost everywhere)."""
    noise = rng.integers(-spread, spread + 1, images.shape)
    return np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)


def shifted(images: np.ndarray, dx: int = 1) -> np.ndarray:
    """Moved right by dx px as a random crop of a zero-padded image moves it."""
    padded = np.pad(images, ((0, 0), (0, 0), (dx, 0), (0, 0)))
    return padded[:, :, : images.shape[2]]


def blurred(images: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    smooth = [gaussian_filter(im.astype(float), sigma=(1.0, 1.0, 0)) for im in images]
    return np.stack(smooth).astype(np.uint8)


@dataclass(frozen=True)
class Planted:
    """A split for planted releases: the yardstick, its calibration, and records never used
    (outside members and holdout) to build honest releases from."""

    yardstick: Yardstick
    calibration: dict
    fresh: np.ndarray


def planted_split(
    images: np.ndarray, n_members: int, n_nonmembers: int, *, mirror: bool, seed: int = 0
) -> Planted:
    order = np.random.default_rng(seed).permutation(len(images))
    members, nonmembers = order[:n_members], order[n_members : n_members + n_nonmembers]
    y = make_yardstick(
        images,
        members,
        nonmembers,
        seed=seed,
        max_holdout=5000,
        max_real=5000,
        nn_shift=2,
        nn_mirror=mirror,
    )
    calibration = {m: ratios for m, (ratios, _) in calibration_ratios(y, device="cpu").items()}
    fresh = images[np.concatenate([order[n_members + n_nonmembers :], y.sets.real_release])]
    return Planted(y, calibration, fresh)


def privacy_row(released: np.ndarray, planted: Planted) -> dict:
    """The privacy columns of a released set, as the privacy stage computes them."""
    summary, _ = release_statistics(
        released,
        planted.yardstick,
        planted.calibration,
        rngs={m: np.random.default_rng(i) for i, m in enumerate(METRICS)},
        nn_k=1,
        levels=(),
        device="cpu",
    )
    return {"generator": "planted", "k": None, **summary}


def failures(row: dict, tmp_path: Path) -> list[str]:
    """The shipped default thresholds' privacy checks on one release (as a run with one
    release would judge it: the Bonferroni level counts its own tests)."""
    verdicts = check(RunDir(tmp_path), {"rows": [row]}, load_thresholds(), metrics=PRIVACY_CHECKS)
    assert {v.metric for v in verdicts} == set(PRIVACY_CHECKS)
    for line in summary_lines(verdicts):
        print(line)
    return [v.metric for v in verdicts if not v.passed]


def assert_honest_releases_pass(planted: Planted, n: int, tmp_path: Path) -> None:
    """Held-out images, blurred and collapsed (5 repeated) pass, judged together as one run
    releasing the three would be (Bonferroni over their tests). Any level-alpha gate fails an
    honest run alpha of the time by design; bench/gate_power.py measures the rate over draws."""
    rng = np.random.default_rng(5)
    fresh = planted.fresh[rng.choice(len(planted.fresh), n, replace=False)]
    few = planted.fresh[rng.choice(len(planted.fresh), 5, replace=False)]
    rows = []
    for name, release in (
        ("held-out", fresh),
        ("blurred", blurred(fresh)),
        ("collapsed", few[rng.integers(0, 5, n)]),
    ):
        row = privacy_row(release, planted) | {"generator": name}
        print(name, {k: f"{row[k]:.2g}" for k in row if k.endswith("_p")})
        assert row["exact_copies"] == 0, name
        rows.append(row)
    verdicts = check(RunDir(tmp_path), {"rows": rows}, load_thresholds(), metrics=PRIVACY_CHECKS)
    assert [v.line() for v in verdicts if not v.passed] == []


def test_planted_releases_on_digits(digits, tmp_path):
    """Moved copies of members fail, as exact copies and by both statistical tests; honest
    releases (held-out images, blurred, collapsed) pass."""
    planted = planted_split(digits.images, 700, 600, mirror=False)
    members = planted.yardstick.members
    rng = np.random.default_rng(1)
    sources = rng.choice(len(members), 100, replace=False)
    moved = privacy_row(shifted(members[sources]), planted)
    assert {"holdout_share_ssim", "copy_count_ssim", "max_exact_copies"} <= set(
        failures(moved, tmp_path)
    )
    assert moved["exact_copies"] == 100 and moved["copy_count_ssim"] >= 90
    copies = privacy_row(noisy(members[sources], rng), planted)
    assert {"holdout_share_ssim", "copy_count_ssim"} <= set(failures(copies, tmp_path))
    one = planted.fresh[:100].copy()
    one[0] = members[int(sources[0])]
    row = privacy_row(one, planted)  # one verbatim copy among held-out images
    assert "max_exact_copies" in failures(row, tmp_path) and row["exact_copies"] == 1
    assert_honest_releases_pass(planted, 300, tmp_path)


@pytest.fixture(scope="session")
def cifar_subset() -> tuple[np.ndarray, np.ndarray]:
    """1,400 real CIFAR-10 training images (140 per class), read straight from the archive
    (sequentially: the .tar.gz has no index)."""
    from PIL import Image

    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip("shared/data/cifar10-jpeg.tar.gz is not beside the repository")
    per_class = 140
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


def test_a_tie_heavy_pool_does_not_favour_members(digits):
    """60 blank members and 60 blank non-members (about 30 of them held out), and a release of
    blank images: every released image ties with every blank pool image. The tie goes to one
    random pool image, a hub that all 100 share, so the permutation test sees one draw (p 1 or
    about 0.7); breaking ties by pool position (members first) gave all of them to the members
    and the old test p 1e-4."""
    images = digits.images.copy()
    order = np.random.default_rng(0).permutation(len(images))
    members, nonmembers = order[:700], order[700:1300]
    images[members[:60]] = 0
    images[nonmembers[:60]] = 0
    y = make_yardstick(
        images,
        members,
        nonmembers,
        seed=0,
        max_holdout=5000,
        max_real=5000,
        nn_shift=1,
        nn_mirror=False,
    )
    blank = np.zeros((100, *images.shape[1:]), np.uint8)
    row, _ = release_statistics(
        blank,
        y,
        {m: np.ones(10) for m in METRICS},
        rngs={m: np.random.default_rng(0) for m in METRICS},
        nn_k=1,
        levels=(),
        device="cpu",
    )
    for metric in METRICS:
        assert row[f"holdout_share_{metric}_p"] > 0.5, metric


def test_planted_releases_on_cifar10(cifar_subset, tmp_path):
    """Shifted and mirrored copies fail; five noisy copies among 495 held-out images fail (the
    copy count, at the level of a one-release run's six tests); honest releases pass."""
    images, _labels = cifar_subset
    assert images.shape == (1400, 32, 32, 3)
    planted = planted_split(images, 600, 600, mirror=True)
    members = planted.yardstick.members
    rng = np.random.default_rng(1)
    sources = members[rng.choice(len(members), 50, replace=False)]
    for name, release in (("shifted", shifted(sources)), ("mirrored", sources[:, :, ::-1])):
        failed = failures(privacy_row(release, planted), tmp_path)
        assert {"holdout_share_ssim", "copy_count_ssim", "max_exact_copies"} <= set(failed), name
    few = planted.fresh[rng.choice(len(planted.fresh), 500, replace=False)]
    few[rng.choice(500, 5, replace=False)] = noisy(sources[:5], rng)
    row = privacy_row(few, planted)
    assert row["exact_copies"] == 0 and row["copy_count_ssim"] >= 5
    assert min(row["copy_count_ssim_p"], row["copy_count_haarpsi_p"]) < 0.05 / 6
    assert_honest_releases_pass(planted, 150, tmp_path)


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
