"""The DP generators: their epsilon against an independent accountant, Opacus's model checks, and
the one-run canary audit catching a release whose claim is false."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dp_accounting import dp_event, pld, rdp

from attacks.canary import audit_canaries, audit_scores, epsilon_lower_bound, reach
from audit.core.accounting import DPRecord, rdp_epsilon, solve_noise, steps_within
from audit.core.config import build_config
from audit.core.errors import AuditError
from audit.core.models import build_model
from generators.base import GenerationRequest
from generators.dp_sgd import require_dp_compatible
from generators.federation import partition
from generators.registry import get_generator
from generators.vae_model import ConditionalVAE, Decoder, Encoder
from reports.results import dp_summary

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
    ours = rdp_epsilon([(sigma, q, steps)], delta=delta)
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
    sigma = solve_noise(epsilon=epsilon, delta=1e-5, sample_rate=0.1, steps=300)
    assert rdp_epsilon([(sigma, 0.1, 300)], delta=1e-5) <= epsilon
    assert rdp_epsilon([(sigma * 0.99, 0.1, 300)], delta=1e-5) > epsilon  # not wastefully large
    steps = steps_within(epsilon=epsilon, delta=1e-5, noise=sigma, sample_rate=0.1)
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


def test_each_records_client_depends_on_that_record_alone():
    """Parallel composition across clients needs it: adding a record moves no other record to
    another client, IID or Dirichlet; every record lands once; alpha 0.1 skews the classes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    images = rng.integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    for how in ("iid", "dirichlet"):
        split = dict(clients=5, how=how, alpha=0.3, num_classes=10, seed=7)
        parts = partition(images, labels, **split)  # type: ignore[arg-type]
        joined = np.concatenate(parts)
        assert len(joined) == len(np.unique(joined)) <= 300
        owner = {int(i): c for c, p in enumerate(parts) for i in p}
        grown = partition(  # one more record, first in line
            np.concatenate([images[:1] ^ 1, images]), np.concatenate([[3], labels]), **split
        )
        moved = {int(i) - 1: c for c, p in enumerate(grown) for i in p if i > 0}
        assert moved == owner
    with pytest.raises(AuditError, match="holds none"):  # dropped, it would renumber the rest
        partition(images[:3], labels[:3], clients=5, how="iid", alpha=1, num_classes=10, seed=0)
    skewed = partition(
        images, labels, clients=5, how="dirichlet", alpha=0.1, num_classes=10, seed=1
    )
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
    assert epsilon_lower_bound(
        canaries=100, guesses=100, correct=100, delta=0.0, level=0.05
    ) == pytest.approx(math.log(q / (1 - q)), rel=1e-3)


def _digits_request(images: np.ndarray, labels: np.ndarray, **fields) -> GenerationRequest:
    """A DP generator's request on 16-px digits at epsilon 1 (the VAEs need no teacher)."""
    return GenerationRequest(
        teacher=None,  # type: ignore[arg-type]
        ks=(),
        n_images=20,
        num_classes=10,
        channels=1,
        image_size=16,
        device="cpu",
        private_images=images,
        private_labels=labels,
        epsilons=(1.0,),
        **fields,
    )


def _positive_control(generator: str, seed: int = 1, **faults: dict) -> dict:
    """A small DP generator at a claimed epsilon 1 on 150 digits, audited as the report audits
    it (attacks/tasks/canaries.py audit_release): 40 mislabelled record canaries and 2,000
    gradient canaries, each in by a fair coin. faults: test-only settings (dp / fed sections)."""
    from attacks.tasks.canary_scores import audit_release
    from audit.core.data import load_dataset

    small = {
        "vae": {"epochs": 4, "batch_size": 32},
        "fed": {"clients": 2, "rounds": 2, "local_epochs": 2, "batch_size": 20},
        "bn_dp": {"epochs": 4, "batch_size": 32, "steps": 2},
        "bn": {"group_size": 10},
    }
    config = build_config(
        small,
        preset="quick",
        gradient_canaries=2000,
        **{k: {**small.get(k, {}), **v} for k, v in faults.items()},
    )
    data = load_dataset("digits", None, image_size=16)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.images))
    members, canaries = order[:150], order[150:190]
    images = data.images[canaries]
    labels = (data.labels[canaries] + rng.integers(1, 10, 40)) % 10
    included = rng.random(40) < 0.5
    coins = rng.random(config.gradient_canaries) < 0.5
    request = _digits_request(
        np.concatenate([data.images[members], images[included]]),
        np.concatenate([data.labels[members], labels[included]]),
        seed=seed,
        gradient_canary_coins=coins,
        planned_records=190,  # the members and every canary: no coin moves the schedule
    )
    release = get_generator(generator, config).generate(request)[1.0]
    assert release.info["eps_accountant"] <= 1.0
    return audit_release(release, images, labels, included, coins, config)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("generator", "faults", "score"),
    [
        ("dp_vae", {"dp": {"actual_noise_factor": 0.0}}, "gradient"),  # no noise
        ("dp_vae", {"dp": {"fault_skip_clipping": True}}, "gradient"),  # clipping skipped
        # the published code's swap
        ("dpd_fvae", {"fed": {"fault_swap_optimisers": True}}, "gradient"),
        # BN matching from a DP teacher: no noise in its DP-SGD, or none in its statistics
        ("bn_match_dp", {"dp": {"actual_noise_factor": 0.0}}, "gradient"),
        ("bn_match_dp", {"bn_dp": {"actual_statistics_noise_factor": 0.0}}, "statistics"),
    ],
    ids=[
        "no-noise",
        "clipping-skipped",
        "dpd-fvae-optimiser-swap",
        "bn-match-dp-teacher-no-noise",
        "bn-match-dp-statistics-no-noise",
    ],
)
def test_positive_controls_are_refuted_at_their_claimed_epsilon_1(generator, faults, score):
    figures = _positive_control(generator, **faults)
    assert figures["dp_claim_status"] == "refuted", figures
    assert figures["eps_audit"] > 1.0 and figures["eps_audit_score"] == f"whitebox_{score}"
    # the gate's level for one audited claim beside any number of other tests: its quarter of alpha
    assert figures["dp_claim_p"] < 0.05 / 4


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["dp_vae", "dp2_vae", "dpd_fvae", "bn_match_dp"])
def test_sound_dp_training_is_not_refuted_and_the_audit_could_have(generator):
    figures = _positive_control(generator)
    assert figures["dp_claim_status"] == "not refuted", figures
    assert figures["eps_audit"] <= 1.0 < figures["eps_audit_max_whitebox_gradient"]
    if generator == "bn_match_dp":  # both halves audited, each able to refute the claim
        assert figures["eps_audit_max_whitebox_statistics"] > 1.0


def test_an_audits_reach_is_what_a_perfect_attack_gets():
    """eps_audit_max at delta 1e-5 and 95%: the figures the report states (100 canaries and one
    score: 3.1; two scores: 2.95; 1,000 canaries: 5.4), and no attack gets past it."""
    assert reach(canaries=100, delta=1e-5) == pytest.approx(3.10, abs=0.01)
    assert reach(canaries=100, delta=1e-5, confidence=0.975) == pytest.approx(2.95, abs=0.01)
    assert reach(canaries=1000, delta=1e-5) == pytest.approx(5.37, abs=0.01)
    # 5,000 gradient canaries beside two other scores, half of them in (docs/generators.md)
    assert reach(
        canaries=5000, delta=1e-5, confidence=1 - 0.05 / 3, included=2500
    ) == pytest.approx(5.7, abs=0.05)
    rng = np.random.default_rng(0)
    coins = rng.random(1000) < 0.5  # a perfect score: right on every guess count it can fill
    perfect = audit_canaries(coins + 0.01 * rng.random(1000), coins, delta=1e-5)
    assert perfect.correct == perfect.guesses and perfect.eps_audit <= perfect.eps_audit_max
    balanced = rng.permutation(np.arange(1000) < 500)  # every count filled: the reach itself
    perfect = audit_canaries(balanced + 0.01 * rng.random(1000), balanced, delta=1e-5)
    assert perfect.eps_audit == pytest.approx(perfect.eps_audit_max)


def test_the_claims_p_value_agrees_with_eps_audit():
    """dp_claim_p < 0.05 exactly when eps_audit (95%) exceeds the claim: one test, two faces."""
    rng = np.random.default_rng(3)
    for trial in range(30):
        included = rng.random(400) < 0.5
        signal = rng.uniform(0, 4)
        scores = {
            "a": (included * signal + rng.normal(size=400), included),
            "b": (rng.normal(size=400), included),
        }
        claim = float(rng.uniform(0.05, 2.5))
        figures = audit_scores(scores, delta=1e-5, claim=claim)
        refuted = figures["eps_audit"] > claim
        assert (figures["dp_claim_p"] < 0.05) == refuted, (trial, figures)
        assert figures["dp_claim_status"] == (
            "refuted"
            if refuted
            else "uninformative"
            if claim >= figures["eps_audit_max"]
            else "not refuted"
        )
        assert figures["dp_claim_p_min"] <= figures["dp_claim_p"]


def test_a_two_phase_row_enters_the_run_level_composition_with_each_phase():
    """bn_match_dp's row: DP-SGD (14.5, 0.2, 300) then its statistics release (18.0, 1, 1). The
    run-level epsilon composes exactly those phases, from dp_phases or, for a row saved
    without them, from its DP-SGD triple and dp_statistics_noise; never the loose triple."""
    import dp_accounting

    sgd, release = (14.5, 0.2, 300), (18.0, 1.0, 1)
    row = {
        "generator": "bn_match_dp",
        "k": None,
        "epsilon": 1.0,
        "eps_accountant": 1.0,
        "dp_noise_multiplier": 14.5,
        "dp_sample_rate": 0.2,
        "dp_steps": 300,
        "dp_statistics_noise": 18.0,
    }
    oracle = (
        rdp.RdpAccountant()
        .compose(_event(0.2, 14.5, 300))
        .compose(dp_accounting.GaussianDpEvent(18.0))
        .get_epsilon(1e-5)
    )
    for stated in ({**row, "dp_phases": [list(sgd), list(release)]}, row):
        summary = dp_summary([stated], n_members=629, delta=1e-5)
        assert summary["composed_epsilon"] == pytest.approx(oracle, rel=0.01)
    loose = rdp_epsilon([(14.5, 1.0, 301)], delta=1e-5)  # what the triple alone used to say
    assert loose > 3 * oracle


def test_the_run_level_epsilon_composes_every_formal_dp_row(caplog):
    """Two releases from the same members cost a member both trainings: RDP composition of the
    rows against dp-accounting; the published DPD-fVAE and bn_match are named as not covered."""
    rows = [
        {
            "generator": "dp_vae",
            "k": None,
            "epsilon": 1.0,
            "eps_accountant": 1.0,
            "dp_noise_multiplier": 7.145,
            "dp_sample_rate": 0.1,
            "dp_steps": 300,
        },
        {
            "generator": "dp2_vae",
            "k": None,
            "epsilon": 10.0,
            "eps_accountant": 9.9,
            "dp_noise_multiplier": 1.1,
            "dp_sample_rate": 0.02,
            "dp_steps": 2000,
        },
        {
            "generator": "dpd_fvae_published",
            "k": None,
            "epsilon": 1.0,
            "eps_accountant": 1.0,
            "dp_formal": False,
            "dp_noise_multiplier": 1.2,
            "dp_sample_rate": 0.25,
            "dp_steps": 46,
        },
        {"generator": "bn_match", "k": 500, "epsilon": None},
        {"generator": "real", "k": None, "epsilon": None},
    ]
    summary = dp_summary(rows, n_members=629, delta=1e-5)
    oracle = rdp.RdpAccountant().compose(_event(0.1, 7.145, 300)).compose(_event(0.02, 1.1, 2000))
    assert summary["composed_epsilon"] == pytest.approx(oracle.get_epsilon(1e-5), rel=0.01)
    alone = [
        rdp_epsilon([(7.145, 0.1, 300)], delta=1e-5),
        rdp_epsilon([(1.1, 0.02, 2000)], delta=1e-5),
    ]
    assert max(alone) < summary["composed_epsilon"] <= sum(alone)
    assert summary["rows"] == ["dp_vae-eps1", "dp2_vae-eps10"]
    assert summary["not_covered"] == ["dpd_fvae_published-eps1", "bn_match-k500"]
    assert not summary["delta_at_least_1_over_n"] and summary["assumptions"]
    with caplog.at_level("WARNING"):
        assert dp_summary(rows, n_members=629, delta=0.01)["delta_at_least_1_over_n"]
    assert "1/n" in caplog.text


def test_the_sound_dpd_fvae_trains_every_private_parameter_with_dp_sgd():
    """The sound variant hands DP-SGD the encoder and the decoder as one module, with nothing
    trained beside it; the published one trains its encoder without privacy (not formal)."""
    config = build_config(preset="quick")
    shape = (1, 16, 10, 8)
    encoder, decoder = Encoder(*shape), Decoder(*shape)
    plain = torch.optim.Adam(encoder.parameters())
    sound = get_generator("dpd_fvae", config)
    module, companion = sound.client_training(encoder, decoder, plain)  # type: ignore[attr-defined]
    assert companion is None
    assert {id(p) for p in module.parameters()} == {
        id(p) for p in [*encoder.parameters(), *decoder.parameters()]
    }
    published = get_generator("dpd_fvae_published", config)
    module, companion = published.client_training(encoder, decoder, plain)  # type: ignore[attr-defined]
    assert module is decoder and companion is plain


def test_a_zero_epoch_dp2_vae_stage_is_a_one_line_error():
    """The generator's own check (its plugin declares it; the run calls it before writing)."""
    from generators.registry import plugin

    config = build_config(preset="quick", generator=("dp2_vae",), vae={"epochs": 1})
    with pytest.raises(AuditError, match="at least 2"):
        plugin("dp2_vae").check(config, 1, 16)


@pytest.mark.parametrize("generator", ["dp_vae", "dpd_fvae", "bn_match_dp"])
def test_the_dp_schedule_does_not_move_with_the_canaries_coins(generator):
    """Planned for a public record count, the sample rate, steps and noise are the same whether
    60 or 75 records are present (the canary audit's coins change how many are)."""
    from audit.core.data import load_dataset

    config = build_config(
        preset="quick",
        vae={"epochs": 2, "batch_size": 16},
        fed={"clients": 2, "rounds": 1, "local_epochs": 2, "batch_size": 8},
        bn_dp={"epochs": 2, "batch_size": 16, "steps": 1},
        bn={"group_size": 10},
    )
    data = load_dataset("digits", None, image_size=16)
    info = []
    for n in (60, 75):
        request = _digits_request(data.images[:n], data.labels[:n], seed=0, planned_records=80)
        info.append(get_generator(generator, config).generate(request)[1.0].info)
    keys = ("dp_sample_rate", "dp_steps", "dp_noise_multiplier", "eps_accountant")
    assert [info[0][k] for k in keys] == [info[1][k] for k in keys]
    # 80 / 16 = 5 steps per epoch; a DPD-fVAE client plans for 80 / 2 clients / 8 = 5 too
    assert info[0]["dp_sample_rate"] == 1 / 5 and info[0]["dp_steps"] == 10
    if generator == "bn_match_dp":  # then its statistics' release: once, on every record
        assert info[0]["dp_phases"][1][1:] == [1.0, 1]
