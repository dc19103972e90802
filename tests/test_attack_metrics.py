import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.metrics import (
    _auc,
    clopper_pearson,
    epsilon_lower_bound,
    evaluate_attack,
    tpr_at_fpr,
)


def scores(shift: float, n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n), rng.normal(0, 1, n)


def test_auc_and_roc_agree_with_sklearn():
    members, nonmembers = scores(0.7)
    members[:50] = nonmembers[:50]  # ties
    result = evaluate_attack(members, nonmembers, rng=np.random.default_rng(0), n_bootstrap=50)
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    all_scores = np.r_[members, nonmembers]
    assert result.auc == pytest.approx(roc_auc_score(labels, all_scores))
    assert _auc(members, nonmembers) == pytest.approx(result.auc)
    fpr, tpr, _ = roc_curve(labels, all_scores)
    assert np.array_equal(result.fpr, fpr) and np.array_equal(result.tpr, tpr)
    assert result.auc_ci[0] < result.auc < result.auc_ci[1]


def test_random_attack_is_at_chance_with_zero_epsilon():
    members, nonmembers = scores(0.0, seed=3)
    result = evaluate_attack(members, nonmembers, rng=np.random.default_rng(1), n_bootstrap=200)
    assert result.auc_ci[0] <= 0.5 <= result.auc_ci[1]
    assert result.eps_lower == 0.0
    assert result.tpr_at_fpr[0.01] < 0.05


def test_perfect_attack():
    members, nonmembers = np.arange(1000) + 1000.0, np.arange(1000, dtype=float)
    result = evaluate_attack(members, nonmembers, rng=np.random.default_rng(0), n_bootstrap=20)
    assert result.auc == 1.0 and result.tpr_at_fpr[0.001] == 1.0
    assert result.balanced_accuracy == 1.0
    # no false positive among 1,000: FPR_hi = 1 - 0.025^(1/1000); TPR_lo = 0.025^(1/1000)
    expected = np.log(0.025 ** (1 / 1000) / (1 - 0.025 ** (1 / 1000)))
    assert result.eps_lower == pytest.approx(expected, rel=1e-6)


def test_stronger_attacks_bound_epsilon_higher():
    weak = epsilon_lower_bound(*scores(0.5))
    strong = epsilon_lower_bound(*scores(2.0))
    assert 0 < weak < strong


def test_clopper_pearson_known_values():
    # zero successes in 10: one-sided 95% upper bound 1 - 0.05^(1/10)
    assert clopper_pearson(np.array([0]), 10, alpha=0.05, upper=True)[0] == pytest.approx(
        1 - 0.05**0.1
    )
    assert clopper_pearson(np.array([10]), 10, alpha=0.05, upper=False)[0] == pytest.approx(
        0.05**0.1
    )
    assert clopper_pearson(np.array([0]), 10, alpha=0.05, upper=False)[0] == 0.0


def test_tpr_at_fpr():
    fpr = np.array([0.0, 0.0, 0.005, 0.02, 1.0])
    tpr = np.array([0.0, 0.3, 0.4, 0.8, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.4
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.3


def test_bad_scores():
    with pytest.raises(ValueError):
        evaluate_attack(np.array([]), np.array([1.0]), rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        evaluate_attack(np.array([np.nan]), np.array([1.0]), rng=np.random.default_rng(0))
