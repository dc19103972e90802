"""GAN-Leaks-style attack on a release: a planted leak is caught, an independent set is not."""

import numpy as np
import pytest

from attacks.metrics import evaluate_attack
from attacks.release import DISTANCES, penultimate_features, release_scores


def attack(teacher, members, nonmembers, synthetic):
    candidates = np.concatenate([members, nonmembers])
    scores = release_scores(
        candidates,
        synthetic,
        candidate_features=penultimate_features(teacher, candidates, device="cpu"),
        synthetic_features=penultimate_features(teacher, synthetic, device="cpu"),
        device="cpu",
    )
    n = len(members)
    rng = np.random.default_rng(0)
    return {d: evaluate_attack(s[:n], s[n:], rng=rng, n_bootstrap=300) for d, s in scores.items()}


def test_planted_leak_is_caught(digits, teacher):
    members, nonmembers = digits.images[:150], digits.images[1000:1150]
    noise = np.random.default_rng(1).integers(-6, 7, members.shape)
    leaked = np.clip(members.astype(int) + noise, 0, 255).astype(np.uint8)  # members + slight noise
    result = attack(teacher, members, nonmembers, leaked)
    assert set(result) == set(DISTANCES)
    for distance in ("pixel_l2", "ssim", "haarpsi"):
        assert result[distance].auc > 0.95, distance
        assert result[distance].tpr_at_fpr[0.01] > 0.5, distance
    assert max(m.eps_lower for m in result.values()) > 1.0


def test_independent_release_is_at_chance(digits, teacher):
    members, nonmembers = digits.images[:150], digits.images[1000:1150]
    independent = digits.images[1500:1700]  # drawn from neither
    for distance, m in attack(teacher, members, nonmembers, independent).items():
        assert m.auc_ci[0] <= 0.5 <= m.auc_ci[1], (distance, m.auc, m.auc_ci)


def test_features_are_the_head_input(teacher, digits):
    features = penultimate_features(teacher, digits.images[:5], device="cpu")
    assert features.shape == (5, teacher.net.output.in_features)
    assert np.isfinite(features.numpy()).all()


@pytest.mark.parametrize("n", [1, 3])
def test_scores_have_one_value_per_candidate(teacher, digits, n):
    candidates = digits.images[:n]
    scores = release_scores(
        candidates,
        digits.images[10:14],
        candidate_features=penultimate_features(teacher, candidates, device="cpu"),
        synthetic_features=penultimate_features(teacher, digits.images[10:14], device="cpu"),
        device="cpu",
    )
    assert all(s.shape == (n,) for s in scores.values())
