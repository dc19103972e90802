import numpy as np
import piq
import pytest
import torch

from audit.similarity import nearest_neighbours, summarise
from audit.training import to_tensor
from tests.conftest import random_images


def brute_force(query, reference, metric):
    fn = piq.ssim if metric == "ssim" else piq.haarpsi
    q, r = to_tensor(query), to_tensor(reference)
    return np.array(
        [
            [float(fn(q[i : i + 1], r[j : j + 1], data_range=1.0)) for j in range(len(r))]
            for i in range(len(q))
        ]
    )


@pytest.mark.parametrize("metric", ["ssim", "haarpsi"])
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_piq_brute_force_with_chunking(metric, channels):
    query = random_images(5, channels=channels, seed=1)
    reference = random_images(11, channels=channels, seed=2)
    scores = brute_force(query, reference, metric)
    # a budget of a few pairs forces many chunks on both sides
    values, indices = nearest_neighbours(query, reference, metric, k=3, memory_budget=60_000)
    expected_idx = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_allclose(values, np.take_along_axis(scores, expected_idx, 1), atol=1e-5)
    assert np.array_equal(indices, expected_idx)


@pytest.mark.parametrize("metric", ["ssim", "haarpsi"])
def test_copied_member_is_found(digits, metric):
    members = digits.images[:200]
    synthetic = random_images(8, seed=3)
    synthetic[5] = members[137]
    values, indices = nearest_neighbours(synthetic, members, metric)
    assert indices[5, 0] == 137
    assert values[5, 0] == pytest.approx(1.0, abs=1e-4)
    assert values[np.arange(8) != 5, 0].max() < 0.9


def test_float_and_uint8_inputs_agree(digits):
    q, r = digits.images[:4], digits.images[10:30]
    a = nearest_neighbours(q, r, "ssim")
    b = nearest_neighbours(to_tensor(q), to_tensor(r), "ssim")
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert np.array_equal(a[1], b[1])


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        nearest_neighbours(random_images(2, 16), random_images(2, 20), "ssim")
    with pytest.raises(ValueError):
        nearest_neighbours(torch.rand(2, 1, 16, 16), torch.rand(3, 1, 16, 16), "psnr")  # type: ignore[arg-type]


def test_summary():
    values = np.linspace(0, 1, 101)
    s = summarise(values, prefix="nn_ssim", thresholds=(0.5, 0.9))
    assert s["nn_ssim_mean"] == pytest.approx(0.5)
    assert s["nn_ssim_p95"] == pytest.approx(0.95)
    assert s["nn_ssim_max"] == 1.0
    assert s["nn_ssim_frac_above_0.5"] == pytest.approx(50 / 101)
    assert s["nn_ssim_frac_above_0.9"] == pytest.approx(10 / 101)
