"""The DP generators: their epsilon against an independent accountant, Opacus's model checks, and
the one-run canary audit catching a release whose claim is false."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dp_accounting import dp_event, pld, rdp

from attacks.canary import audit_canaries, epsilon_lower_bound
from audit.config import build_config
from audit.errors import AuditError
from audit.models import build_model
from generators.accounting import DPRecord, rdp_epsilon, solve_noise, steps_within
from generators.base import GenerationRequest, get_generator
from generators.dp_sgd import require_dp_compatible
from generators.dpd_fvae import partition
from generators.vae import ConditionalVAE

SETTINGS = [  # (sample rate, noise multiplier, steps, delta)
    (0.02, 1.1, 2000, 1e-5),
    (0.1, 7.145, 300, 1e-5),
    (0.25, 1.2, 46, 1e-5),
    (1 / 3, 0.8, 6, 1e-6),
]


def _event(q: float, sigma: float, steps: int) -> dp_event.DpEvent:
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), SETTINGS)
def test_accountant_matches_dp_accounting(q, sigma, steps, delta):
    ours = rdp_epsilon([(sigma, q, steps)], delta)
    oracle = rdp.RdpAccountant().compose(_event(q, sigma, steps)).get_epsilon(delta)
    tight = pld.PLDAccountant().compose(_event(q, sigma, steps)).get_epsilon(delta)
    assert ours == pytest.approx(oracle, rel=0.01)
    assert ours >= tight  # an accountant below PLD would under-report


def test_two_phases_compose_in_one_accountant():
    # DP^2-VAE: two phases at one noise and rate cost as much as one phase of their total steps
    record = DPRecord(10.0, 1e-5, ((1.2, 0.1, 150), (1.2, 0.1, 150)))
    oracle = rdp.RdpAccountant()
    oracle.compose(_event(0.1, 1.2, 150)).compose(_event(0.1, 1.2, 150))
    assert record.eps_accountant == pytest.approx(oracle.get_epsilon(1e-5), rel=0.01)
    assert record.columns()["dp_steps"] == 300


@pytest.mark.parametrize("epsilon", [1.0, 10.0])
def test_solved_noise_spends_the_budget(epsilon):
    sigma = solve_noise(epsilon, 1e-5, 0.1, 300)
    assert rdp_epsilon([(sigma, 0.1, 300)], 1e-5) <= epsilon
    assert rdp_epsilon([(sigma * 0.99, 0.1, 300)], 1e-5) > epsilon  # not wastefully large
    steps = steps_within(epsilon, 1e-5, sigma, 0.1)
    assert 300 <= steps < 330


def test_opacus_accepts_every_vae_and_rejects_batchnorm():
    for shape in ((1, 16, 10, 8), (3, 32, 10, 16), (1, 28, 10, 8)):
        vae = ConditionalVAE(*shape)
        require_dp_compatible(vae)
        require_dp_compatible(vae.decoder)
    with pytest.raises(AuditError, match="DP-SGD"):
        require_dp_compatible(build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0))
    with pytest.raises(AuditError, match="divisible by 4"):
        ConditionalVAE(1, 18, 10, 8)


def test_non_iid_partition_covers_every_member_once():
    labels = np.repeat(np.arange(10), 30)
    rng = np.random.default_rng(0)
    for how in ("iid", "dirichlet"):
        parts = partition(labels, 5, how, 0.3, rng)
        joined = np.concatenate(parts)
        assert len(joined) == len(np.unique(joined)) <= 300
    skewed = partition(labels, 5, "dirichlet", 0.1, np.random.default_rng(1))
    shares = [np.bincount(labels[p], minlength=10).max() / len(p) for p in skewed]
    assert max(shares) > 0.3  # alpha 0.1: some client is dominated by one class


def test_eps_audit_is_sound_on_chance_scores_and_sharp_on_perfect_ones():
    rng = np.random.default_rng(0)
    draws = [
        audit_canaries(rng.normal(size=200), rng.random(200) < 0.5, delta=1e-5).eps_audit
        for _ in range(200)
    ]
    assert np.mean(np.asarray(draws) > 0) <= 0.05  # a false bound at most 5% of the time
    included = rng.random(200) < 0.5
    perfect = audit_canaries(included + 0.01 * rng.normal(size=200), included, delta=1e-5)
    assert perfect.eps_audit > 2.5 and perfect.correct == perfect.guesses
    # all r guesses right, delta 0: q^r = level at q = e^eps / (1 + e^eps), in closed form
    q = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(100, 100, 100, 0.0, 0.05) == pytest.approx(
        math.log(q / (1 - q)), rel=1e-3
    )


def _audit_dp_vae(noise_factor: float, seed: int) -> float:
    """A small DP-VAE at a claimed epsilon 1 on 40 digits + 60 mislabelled canaries (each in by
    a fair coin), in a regime where training without noise memorises: eps_audit by the white-box
    ELBO score."""
    from audit.data import load_dataset

    config = build_config(
        preset="quick",
        dp={"actual_noise_factor": noise_factor, "clip": 100.0},
        vae={"epochs": 80, "batch_size": 16, "lr": 0.003},
    )
    data = load_dataset("digits", None, image_size=16)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.images))
    members, canaries = order[:40], order[40:100]
    images = data.images[canaries]
    labels = (data.labels[canaries] + rng.integers(1, 10, 60)) % 10
    included = rng.random(60) < 0.5
    request = GenerationRequest(
        teacher=None,  # type: ignore[arg-type]
        ks=(),
        n_images=10,
        num_classes=10,
        channels=1,
        image_size=16,
        seed=seed,
        device="cpu",
        private_images=np.concatenate([data.images[members], images[included]]),
        private_labels=np.concatenate([data.labels[members], labels[included]]),
        epsilons=(1.0,),
    )
    torch.manual_seed(seed)
    release = get_generator("dp_vae", config).generate(request)[1.0]
    assert release.info["eps_accountant"] <= 1.0
    assert release.score_records is not None
    scores = -release.score_records(images, labels)
    return audit_canaries(scores, included, delta=1e-5).eps_audit


@pytest.mark.slow
def test_canary_audit_flags_a_false_claim_and_clears_a_true_one():
    assert _audit_dp_vae(noise_factor=0.0, seed=1) > 1.0  # no noise, epsilon 1 claimed
    assert _audit_dp_vae(noise_factor=1.0, seed=1) <= 1.0  # DP-SGD as solved for epsilon 1
