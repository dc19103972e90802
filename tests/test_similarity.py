"""The all-pairs engine against piq itself (the oracle) and against brute force."""

import dataclasses
from pathlib import Path

import numpy as np
import piq
import pytest
import torch

from audit.core import pairwise, similarity
from audit.core.similarity import ENGINES, nearest_neighbours, plan_blocks, summarise
from audit.core.training import to_tensor
from tests.conftest import random_images

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "piq-golden"
METRICS = ["ssim", "haarpsi"]


def piq_all_pairs(query: np.ndarray, reference: np.ndarray, metric: str) -> np.ndarray:
    fn = piq.ssim if metric == "ssim" else piq.haarpsi
    q, r = to_tensor(query), to_tensor(reference)
    rows = [
        fn(q[i : i + 1].expand(len(r), -1, -1, -1), r, data_range=1.0, reduction="none")
        for i in range(len(q))
    ]
    return torch.stack(rows).numpy()


def engine_all_pairs(query, reference, metric, **kwargs):
    """Every pair's score from the engine: k = all references, put back in reference order."""
    values, indices = nearest_neighbours(query, reference, metric, k=len(reference), **kwargs)
    out = np.empty_like(values)
    np.put_along_axis(out, indices, values, axis=1)
    return out, values, indices


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_pair_equals_piq_with_blocks_on_both_sides(metric, channels):
    query = random_images(7, size=32, channels=channels, seed=1)  # odd sizes: padded blocks
    reference = random_images(13, size=32, channels=channels, seed=2)
    expected = piq_all_pairs(query, reference, metric)
    engine = ENGINES[metric]
    per_pair = engine.bytes_per_pair(engine.features(to_tensor(query[:1])), compiled=False)
    assert plan_blocks(7, 13, per_pair, 5 * per_pair) == (1, 5)  # both sides split, padded
    # what benchmarks warm torch.compile up with: the block the search below will use
    shape = query.shape[1:]
    assert similarity.block_shape(
        7, 13, metric, shape, compiled=False, memory_budget=5 * per_pair
    ) == (1, 5)
    scores, _, indices = engine_all_pairs(query, reference, metric, memory_budget=5 * per_pair)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert np.array_equal(indices, np.argsort(-expected, axis=1, kind="stable"))


@pytest.mark.parametrize("metric", METRICS)
def test_real_digits_equal_piq(digits, metric):
    query, reference = digits.images[:9], digits.images[100:141]
    scores, _, _ = engine_all_pairs(query, reference, metric)
    np.testing.assert_allclose(scores, piq_all_pairs(query, reference, metric), atol=1e-5, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_top_k_is_brute_force_top_k(digits, metric):
    query, reference = digits.images[:20], digits.images[200:500]
    brute = piq_all_pairs(query, reference, metric)
    values, indices = nearest_neighbours(query, reference, metric, k=3, memory_budget=2**20)
    assert np.array_equal(indices, np.argsort(-brute, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(values, np.sort(brute, axis=1)[:, ::-1][:, :3], atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_and_constant_images(metric):
    images = random_images(4, size=16, channels=3, seed=5)
    images[2] = 0
    images[3] = 200
    values, indices = nearest_neighbours(images, images, metric)
    assert indices[:2, 0].tolist() == [0, 1]
    np.testing.assert_allclose(values[:2, 0], 1.0, atol=1e-5)
    scores, _, _ = engine_all_pairs(images, images, metric)
    expected = piq_all_pairs(images, images, metric)
    if metric == "haarpsi":  # piq: inf for two black images (0 / 0 weights); the engine: 1
        assert (
            np.isinf(expected[2, 2]) and np.isfinite(np.delete(expected.ravel(), 2 * 4 + 2)).all()
        )
        expected[2, 2] = 1.0
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert np.isfinite(scores).all()


def odd_images(channels: int) -> np.ndarray:
    """Images a loader accepts but a formula may trip on: constants (black, white, grey, one grey
    level above black), one bright pixel on black, one dark pixel on white, a checkerboard, a
    saturated half and random noise."""
    size = 16
    images = np.zeros((10, size, size, channels), np.uint8)
    images[1], images[2], images[3] = 255, 128, 1
    images[4, 7, 7] = 255
    images[5] = 255
    images[5, 0, 0] = 0
    images[6] = ((np.indices((size, size)).sum(0) % 2) * 255)[..., None]
    images[7, :, : size // 2] = 255
    images[8:] = random_images(2, size=size, channels=channels, seed=11)
    return images


@pytest.mark.parametrize("channels", [1, 3])
def test_odd_images_give_finite_scores_everywhere(channels):
    """Fuzz: every pair of odd images through the engine, the holdout statistics and the release
    attacks gives finite scores (piq's HaarPSI of two black images is inf)."""
    from attacks.metrics import evaluate_attack
    from attacks.release import release_scores
    from audit.core.memorisation import calibration_ratios, make_yardstick, release_statistics

    images = odd_images(channels)
    for metric in METRICS:
        values, _ = nearest_neighbours(images, images, metric, k=len(images), progress=False)
        assert np.isfinite(values).all(), metric
        assert np.allclose(values[:, 0], 1.0, atol=1e-4), metric  # each image matches itself
    features = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))
    scores = release_scores(
        images,
        images[::-1].copy(),
        candidate_features=features,
        synthetic_features=features.flip(0),
        device="cpu",
    )
    is_member = np.arange(len(images)) < 5
    for name, s in scores.items():
        assert np.isfinite(s).all(), name
        evaluate_attack(s[is_member], s[~is_member], rng=np.random.default_rng(0), n_bootstrap=5)
    y = make_yardstick(
        images,
        np.arange(4),
        np.arange(4, 10),
        seed=0,
        max_holdout=3,
        max_real=3,
        nn_shift=2,
        nn_mirror=True,
    )
    calibration = {m: ratios for m, (ratios, _) in calibration_ratios(y, device="cpu").items()}
    assert all(not np.isnan(r).any() for r in calibration.values())
    summary, _ = release_statistics(
        images,
        y,
        calibration,
        rngs={m: np.random.default_rng(0) for m in METRICS},
        nn_k=2,
        levels=(0.5,),
        device="cpu",
    )
    assert all(np.isfinite(v) for v in summary.values() if isinstance(v, float))


@pytest.mark.parametrize("metric", METRICS)
def test_compiled_path_equals_eager(metric):
    query = random_images(5, size=16, channels=3, seed=7)
    reference = random_images(9, size=16, channels=3, seed=8)
    eager = engine_all_pairs(query, reference, metric, compiled=False)[0]
    fused = engine_all_pairs(query, reference, metric, compiled=True)[0]
    np.testing.assert_allclose(fused, eager, atol=1e-5, rtol=0)
    # blocks split on both sides (the last of each padded), as in a search larger than a budget
    engine = ENGINES[metric]
    per_pair = engine.bytes_per_pair(engine.features(to_tensor(query[:1])), compiled=True)
    shape = query.shape[1:]
    budget = 8 * per_pair
    assert similarity.block_shape(5, 9, metric, shape, compiled=True, memory_budget=budget) == (
        1,
        5,
    )
    split = engine_all_pairs(query, reference, metric, compiled=True, memory_budget=budget)
    np.testing.assert_allclose(split[0], eager, atol=1e-5, rtol=0)


def test_copied_member_is_found(digits):
    members = digits.images[:200]
    synthetic = random_images(8, seed=3)
    synthetic[5] = members[137]
    for metric in METRICS:
        values, indices = nearest_neighbours(synthetic, members, metric)
        assert indices[5, 0] == 137
        assert values[5, 0] == pytest.approx(1.0, abs=1e-4)
        assert values[np.arange(8) != 5, 0].max() < 0.9


def test_blocks_respect_the_memory_budget():
    feats = pairwise.ssim_features(torch.rand(3, 3, 32, 32))
    per_pair = pairwise.ssim_bytes_per_pair(feats, compiled=False)
    for budget in (per_pair, 7 * per_pair, 300 * per_pair, 10**9):
        q_block, r_block = plan_blocks(501, 2003, per_pair, budget)
        assert q_block * r_block * per_pair <= max(budget, per_pair)
        assert 1 <= q_block <= 501 and 1 <= r_block <= 1024
    # a small budget really splits both sides, and changes nothing in the answer
    assert plan_blocks(50, 60, per_pair, 30 * per_pair) == (1, 30)
    query, reference = random_images(6, 32, 3, seed=1), random_images(40, 32, 3, seed=2)
    small = nearest_neighbours(query, reference, "ssim", k=2, memory_budget=30 * per_pair)
    large = nearest_neighbours(query, reference, "ssim", k=2)
    assert np.array_equal(small[1], large[1])
    np.testing.assert_allclose(small[0], large[0], atol=1e-6)


@pytest.mark.parametrize(
    "x_name, y_name, metric, piq_value, matlab_value",
    [
        ("i01_01_5.bmp", "I01.BMP", "haarpsi", 0.717036, 0.71706527),
        ("goldhill_jpeg.gif", "goldhill.gif", "ssim", 0.820204, 0.8202),
        ("i01_01_5.bmp", "I01.BMP", "ssim", 0.781960, 0.7820),
    ],
)
def test_piq_golden_images(x_name, y_name, metric, piq_value, matlab_value):
    """piq's own test images with MATLAB reference values (large: SSIM downsamples by 2)."""
    if not GOLDEN.exists():
        pytest.skip("shared/data/piq-golden is not beside the repository")
    from PIL import Image

    def load(name):
        array = np.asarray(Image.open(GOLDEN / name)).squeeze()
        return (array[..., None] if array.ndim == 2 else array)[None].astype(np.uint8)

    values, _ = nearest_neighbours(load(x_name), load(y_name), metric)
    assert values[0, 0] == pytest.approx(piq_value, abs=1e-5)
    assert values[0, 0] == pytest.approx(matlab_value, abs=1e-4)


def test_float_and_uint8_inputs_agree(digits):
    q, r = digits.images[:4], digits.images[10:30]
    a = nearest_neighbours(q, r, "ssim")
    b = nearest_neighbours(to_tensor(q), to_tensor(r), "ssim")
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert np.array_equal(a[1], b[1])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="differ"):
        nearest_neighbours(random_images(2, 16), random_images(2, 20), "ssim")
    with pytest.raises(ValueError, match="unknown metric"):
        nearest_neighbours(random_images(2, 16), random_images(3, 16), "psnr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        nearest_neighbours(random_images(2, 16), random_images(3, 16), "ssim", k=4)
    with pytest.raises(ValueError, match="channels"):
        nearest_neighbours(random_images(2, 16, 2), random_images(3, 16, 2), "ssim")


def test_summary():
    values = np.linspace(0, 1, 101)
    s = summarise(values, prefix="nn_ssim", levels=(0.5, 0.9))
    assert s["nn_ssim_mean"] == pytest.approx(0.5)
    assert s["nn_ssim_p95"] == pytest.approx(0.95)
    assert s["nn_ssim_max"] == 1.0
    assert s["nn_ssim_frac_above_0_5"] == pytest.approx(50 / 101)
    assert s["nn_ssim_frac_above_0_9"] == pytest.approx(10 / 101)


@pytest.mark.parametrize("metric", METRICS)
def test_real_cifar_equal_exact_values(cifar_folder, metric):
    """On natural images piq's float32 SSIM itself drifts from its float64 value (it cancels in
    flat windows): the engine is held to the exact (float64 piq) value instead. With -s it
    prints both drifts (the README quotes them)."""
    from audit.core.data import load_dataset

    images = load_dataset("imagefolder", str(cifar_folder), image_size=None).images
    query, reference = images[:10], images[60:120]
    fn = piq.ssim if metric == "ssim" else piq.haarpsi
    q, r = to_tensor(query).double(), to_tensor(reference).double()
    exact = torch.stack(
        [
            fn(q[i : i + 1].expand(len(r), -1, -1, -1), r, data_range=1.0, reduction="none")
            for i in range(len(q))
        ]
    ).numpy()
    scores, _, _ = engine_all_pairs(query, reference, metric)
    piq32 = piq_all_pairs(query, reference, metric)
    print(
        f"{metric} on {scores.size} CIFAR-10 pairs, largest distance from piq float64: engine "
        f"{np.abs(scores - exact).max():.2g}, piq float32 {np.abs(piq32 - exact).max():.2g}"
    )
    np.testing.assert_allclose(scores, exact, atol=1e-5, rtol=0)


def _failing_engine(metric: str, error: Exception) -> similarity.Engine:
    """The metric's engine, except that its compiled path raises error."""
    engine = ENGINES[metric]

    def pairwise_or_fail(q, r, *, compiled, workspace):
        if compiled:
            raise error
        return engine.pairwise(q, r, compiled=False, workspace=workspace)

    return dataclasses.replace(engine, pairwise=pairwise_or_fail)


def test_compile_failure_falls_back_once_and_replans(monkeypatch, caplog, digits):
    """A compiler failure: one warning, exact eager results, and blocks re-planned with the eager
    path's larger per-pair cost (the compiled plan could be 8x over the memory budget)."""
    failure = torch._dynamo.exc.TorchDynamoException("no working C++ compiler")
    monkeypatch.setitem(ENGINES, "ssim", _failing_engine("ssim", failure))
    monkeypatch.setattr(similarity, "_compile_failed", False)
    plans = []
    real_plan = similarity.plan_blocks
    monkeypatch.setattr(similarity, "plan_blocks", lambda *a: plans.append(a[2]) or real_plan(*a))
    query, reference = digits.images[:30], digits.images[100:400]
    with caplog.at_level("WARNING", logger="audit.core.similarity"):
        first = nearest_neighbours(query, reference, "ssim", compiled=True, progress=False)
        second = nearest_neighbours(query, reference, "ssim", compiled=True, progress=False)
    eager = nearest_neighbours(query, reference, "ssim", compiled=False, progress=False)
    for result in (first, second):
        assert np.array_equal(result[0], eager[0]) and np.array_equal(result[1], eager[1])
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0].getMessage()
    features = ENGINES["ssim"].features(to_tensor(query[:1]))
    eager_cost = ENGINES["ssim"].bytes_per_pair(features, compiled=False)
    compiled_cost = ENGINES["ssim"].bytes_per_pair(features, compiled=True)
    assert plans[0] == compiled_cost < eager_cost and plans[1:] == [eager_cost] * 3


def test_other_errors_on_the_compiled_path_are_not_swallowed(monkeypatch, digits):
    monkeypatch.setitem(ENGINES, "ssim", _failing_engine("ssim", RuntimeError("a real bug")))
    monkeypatch.setattr(similarity, "_compile_failed", False)
    with pytest.raises(RuntimeError, match="a real bug"):
        nearest_neighbours(digits.images[:5], digits.images[:50], "ssim", compiled=True)
    assert similarity._compile_failed is False


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_scikit_image(digits, channels):
    """An oracle independent of piq: scikit-image's SSIM with the same definition (Gaussian
    window, sigma 1.5, population covariance, data range 1) on every pair."""
    from skimage.metrics import structural_similarity

    if channels == 1:
        query, reference = digits.images[:12], digits.images[300:340]
    else:
        query = random_images(6, size=32, channels=3, seed=21)
        reference = random_images(10, size=32, channels=3, seed=22)
        reference[4] = query[2]
    values, indices = nearest_neighbours(query, reference, "ssim", k=len(reference), progress=False)
    engine = np.empty((len(query), len(reference)))
    engine[np.arange(len(query))[:, None], indices] = values
    oracle = np.array(
        [
            [
                structural_similarity(
                    q / 255.0,
                    r / 255.0,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=1.0,
                    channel_axis=-1,
                )
                for r in reference
            ]
            for q in query
        ]
    )
    np.testing.assert_allclose(engine, oracle, atol=1e-5, rtol=0)
