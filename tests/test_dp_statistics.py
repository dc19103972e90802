"""The DP release of activation statistics (generators/dp_statistics.py), the first part of BN
matching from a DP teacher: one record moves the released sum by at most its sensitivity, the
noise has the stated scale, the statistics are the batch statistics BN matching needs, and the
composed accounting agrees with dp-accounting."""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.accounting import rdp_epsilon, solve_noise
from audit.core.errors import AuditError
from generators.dp_statistics import clipped, moments, noisy_sum, statistics_phase, summaries


def records(seed: int, n: int = 60, d: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = rng.choice([0.01, 1.0, 100.0], size=(n, 1))  # some far beyond the clip, some not
    return rng.normal(size=(n, d)) * scales


@pytest.mark.parametrize("seed", range(20))
def test_one_record_moves_the_release_by_at_most_its_sensitivity(seed: int) -> None:
    """Add/remove one record: the released sum (same noise draw) moves by <= clip in L2;
    replace one: <= 2 clip. The property DP's sensitivity is, checked on records of every scale."""
    vectors, clip, sigma = records(seed), 1.5, 0.8

    def release(rows: np.ndarray) -> np.ndarray:  # the same noise draw every time
        return noisy_sum(rows, clip=clip, noise_multiplier=sigma, rng=np.random.default_rng(7))

    full = release(vectors)
    other = records(seed + 1000, n=1)
    for i in range(len(vectors)):
        removed = np.delete(vectors, i, axis=0)
        without = noisy_sum(
            removed, clip=clip, noise_multiplier=sigma, rng=np.random.default_rng(7)
        )
        assert np.linalg.norm(full - without) <= clip * (1 + 1e-12)
        replaced = vectors.copy()
        replaced[i] = other[0]
        swapped = noisy_sum(
            replaced, clip=clip, noise_multiplier=sigma, rng=np.random.default_rng(7)
        )
        assert np.linalg.norm(full - swapped) <= 2 * clip * (1 + 1e-12)
    # and the bound is reached: a record far beyond the clip moves the sum by exactly clip
    big = np.zeros((1, vectors.shape[1]))
    big[0, 0] = 1e6
    grown = release(np.vstack([vectors, big]))
    assert np.linalg.norm(grown - full) == pytest.approx(clip)


def test_the_noise_has_the_stated_scale() -> None:
    vectors, clip, sigma = records(1), 2.0, 1.3
    clean = clipped(vectors, clip=clip).sum(axis=0)
    rng = np.random.default_rng(3)
    draws = np.stack(
        [noisy_sum(vectors, clip=clip, noise_multiplier=sigma, rng=rng) - clean for _ in range(400)]
    )
    # 9,600 coordinates: the sample std lies within 3% of sigma x clip with overwhelming odds
    assert draws.std() == pytest.approx(sigma * clip, rel=0.03)
    assert abs(draws.mean()) < 0.1


def test_the_moments_are_the_batch_statistics_bn_matching_matches() -> None:
    """Without noise (sigma 1e-20) and with no record clipped, the released moments equal the
    batch mean and variance over (records, positions) of each layer's input."""
    rng = np.random.default_rng(5)
    layers = [rng.normal(1.0, 2.0, size=(30, 3, 4, 4)), rng.normal(0.0, 0.5, size=(30, 5, 2, 2))]
    vectors = summaries(layers)
    released = noisy_sum(vectors, clip=1e6, noise_multiplier=1e-20, rng=rng)
    found = moments(released, records=30, channels=(3, 5))
    for (mean, var), layer in zip(found, layers, strict=True):
        np.testing.assert_allclose(mean, layer.mean(axis=(0, 2, 3)), rtol=1e-8)
        np.testing.assert_allclose(var, layer.var(axis=(0, 2, 3)), rtol=1e-8)


def test_the_composed_epsilon_agrees_with_dp_accounting() -> None:
    """DP-SGD (Poisson rate q, T steps) and the statistics release, in one RDP accountant, against
    Google's dp-accounting composing the same events."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting import rdp

    q, steps, sgd_noise, stats_noise, delta = 0.05, 400, 1.1, 6.0, 1e-5
    ours = rdp_epsilon([(sgd_noise, q, steps), statistics_phase(stats_noise)], delta=delta)
    sgd = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sgd_noise))
    oracle = (
        rdp.RdpAccountant()
        .compose(dp_accounting.SelfComposedDpEvent(sgd, steps))
        .compose(dp_accounting.GaussianDpEvent(stats_noise))
    )
    assert ours == pytest.approx(oracle.get_epsilon(delta), rel=0.01)
    alone = rdp_epsilon([(sgd_noise, q, steps)], delta=delta)
    assert alone < ours  # the release is charged, not free


def test_the_training_noise_is_solved_for_what_the_release_left() -> None:
    spent = (statistics_phase(8.0),)
    sigma = solve_noise(epsilon=2.0, delta=1e-5, sample_rate=0.05, steps=300, spent=spent)
    both = [*spent, (sigma, 0.05, 300)]
    assert rdp_epsilon(both, delta=1e-5) <= 2.0
    assert rdp_epsilon([*spent, (sigma * 0.99, 0.05, 300)], delta=1e-5) > 2.0
    alone = solve_noise(epsilon=2.0, delta=1e-5, sample_rate=0.05, steps=300)
    assert sigma > alone  # less budget left, more noise
    with pytest.raises(AuditError, match="nothing is left"):
        solve_noise(
            epsilon=0.5, delta=1e-5, sample_rate=0.05, steps=300, spent=(statistics_phase(0.5),)
        )


def test_impossible_inputs_are_value_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="clip"):
        noisy_sum(records(0), clip=0.0, noise_multiplier=1.0, rng=rng)
    with pytest.raises(ValueError, match="noise_multiplier"):
        noisy_sum(records(0), clip=1.0, noise_multiplier=0.0, rng=rng)
    with pytest.raises(ValueError, match="finite"):
        clipped(np.array([[np.nan, 1.0]]), clip=1.0)
    with pytest.raises(ValueError, match="not 2 x"):
        moments(np.zeros(5), records=3, channels=(2,))
