import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from attacks import metrics
from attacks.metrics import (
    _auc,
    evaluate_attack,
    roc_epsilon_estimate,
    select_strongest,
    selection_halves,
    tpr_at_fpr,
)
from audit.core.stats import clopper_pearson


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
    fpr, tpr, _ = roc_curve(labels, all_scores, drop_intermediate=False)
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
    weak = roc_epsilon_estimate(*scores(0.5))
    strong = roc_epsilon_estimate(*scores(2.0))
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


def brute_force_tpr_at_fpr(members, nonmembers, target):
    """max TPR over every threshold t (predict member when score >= t) with FPR <= target."""
    best = 0.0
    for t in np.unique(np.r_[members, nonmembers, np.inf]):
        if (nonmembers >= t).mean() <= target:
            best = max(best, float((members >= t).mean()))
    return best


def test_tpr_at_low_fpr_keeps_every_threshold_on_tied_scores():
    # tied scores whose ROC points lie on one line: 20 levels, each holding 5 non-members and 10
    # members. sklearn's default drop_intermediate drops the points inside the line, leaving
    # TPR 0 at 1% FPR; every threshold must count (true value: 2 levels, TPR 0.02)
    levels = np.arange(20, 0, -1, dtype=float) + 100
    members = np.r_[np.repeat(levels, 10), np.zeros(800)]
    nonmembers = np.r_[np.repeat(levels, 5), np.zeros(900)]
    dropped_fpr, dropped_tpr, _ = roc_curve(
        np.r_[np.ones(1000), np.zeros(1000)], np.r_[members, nonmembers]
    )
    assert tpr_at_fpr(dropped_fpr, dropped_tpr, 0.01) < 0.02  # what the default gets wrong
    result = evaluate_attack(members, nonmembers, rng=np.random.default_rng(0), n_bootstrap=10)
    assert result.tpr_at_fpr[0.01] == brute_force_tpr_at_fpr(members, nonmembers, 0.01) == 0.02
    # and random heavily tied scores agree with a brute-force count at every target
    rng = np.random.default_rng(7)
    for _ in range(20):
        members = rng.integers(0, 5, 400).astype(float) + (rng.random(400) < 0.3)
        nonmembers = rng.integers(0, 5, 400).astype(float)
        result = evaluate_attack(members, nonmembers, rng=rng, n_bootstrap=10)
        for target in (0.01, 0.05, 0.2):
            expected = brute_force_tpr_at_fpr(members, nonmembers, target)
            assert tpr_at_fpr(result.fpr, result.tpr, target) == pytest.approx(expected)


def test_tpr_at_unresolvable_fpr_is_not_reported():
    members, nonmembers = scores(1.0, n=500)
    result = evaluate_attack(members, nonmembers, rng=np.random.default_rng(0), n_bootstrap=10)
    assert result.tpr_at_fpr[0.001] is None  # 500 non-members cannot show 0.1% FPR
    assert result.tpr_at_fpr[0.01] is not None  # 500 >= 100


def test_epsilon_with_delta_is_smaller_and_states_its_form():
    members, nonmembers = scores(2.0)
    pure = roc_epsilon_estimate(members, nonmembers)
    approximate = roc_epsilon_estimate(members, nonmembers, delta=0.05)
    assert 0 < approximate < pure
    result = evaluate_attack(
        members, nonmembers, rng=np.random.default_rng(0), n_bootstrap=10, delta=1e-5
    )
    assert result.eps_delta == 1e-5


def test_worst_case_over_attacks_at_chance_is_not_biased():
    """16 attacks that know nothing: the max of their AUCs on the same data sits above 0.5, the
    attack chosen on one half and measured on the other does not."""
    covered, naive_above, rejected = 0, 0, 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
        attacks = {f"a{i}": rng.normal(size=600) for i in range(16)}
        select = selection_halves(is_member, rng)
        assert select.sum() == 300 and select[is_member].sum() == 150
        chosen = select_strongest(attacks, is_member, select, rng=rng, n_bootstrap=200)
        low, high = chosen.metrics.auc_ci
        covered += low <= 0.5 <= high
        rejected += chosen.p_value < 0.05
        naive = max(_auc(s[is_member], s[~is_member]) for s in attacks.values())
        naive_above += naive > 0.52
    assert covered >= 17  # a 95% CI, 20 draws
    assert rejected <= 3  # the gate's test at level 0.05 rarely rejects at chance
    assert naive_above >= 15  # the naive max over 16 attacks is biased upwards


def test_the_chosen_attack_is_the_strong_one():
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(400, bool), np.zeros(400, bool)]
    attacks = {f"noise{i}": rng.normal(size=800) for i in range(5)}
    attacks["signal"] = rng.normal(size=800) + is_member
    chosen = select_strongest(
        attacks, is_member, selection_halves(is_member, rng), rng=rng, n_bootstrap=50
    )
    assert chosen.attack == "signal"
    assert chosen.metrics.auc > 0.7 and chosen.metrics.p_value < 1e-6
    assert chosen.metrics.n_members == 200 and chosen.metrics.n_nonmembers == 200


@pytest.mark.parametrize(("n_in", "n_out", "chunk"), [(150, 97, 2**21), (40, 3, 64), (7, 7, 1)])
def test_bootstrap_aucs_are_the_loop_of_choices_they_replace(monkeypatch, n_in, n_out, chunk):
    """The vectorised bootstrap draws what one rng.choice of members and one of non-members per
    resample draw, and scores each resample as the single-pair AUC does (ties included), in
    chunks of any size; the stream is left where the loop leaves it."""
    monkeypatch.setattr(metrics, "BOOTSTRAP_CHUNK", chunk)
    scores = np.random.default_rng(3).integers(0, 12, n_in + n_out).astype(float)  # many ties
    members, nonmembers = scores[:n_in], scores[n_in:]
    loop_rng, fast_rng = np.random.default_rng(9), np.random.default_rng(9)
    loop = [
        metrics._auc(loop_rng.choice(members, n_in), loop_rng.choice(nonmembers, n_out))
        for _ in range(60)
    ]
    fast = metrics.bootstrap_aucs(members, nonmembers, fast_rng, 60)
    assert fast.tolist() == loop
    assert fast_rng.random() == loop_rng.random()
