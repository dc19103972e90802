"""Classifier membership attacks: signal definitions, LiRA/RMIA on controlled inputs, and a real
overfit target that leaks more than the model retrained on its BN-matched synthetic set."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.membership import (
    LIRA_ATTACKS,
    REFERENCE_ATTACKS,
    SINGLE_MODEL_SIGNALS,
    assign_halves,
    class_calibrated,
    lira_scores,
    logit_scaled_confidence,
    model_attack_scores,
    rmia_offline_scores,
    signal,
)
from attacks.metrics import evaluate_attack
from audit.core.models import build_model
from audit.core.sections import BNMatchConfig, TrainConfig
from audit.core.training import accuracy, predict_logits, retrain
from generators.bn_match import balanced_labels, bn_match
from tests.conftest import fit_on


def auc(scores, is_member):
    rng = np.random.default_rng(0)
    return evaluate_attack(scores[is_member], scores[~is_member], rng=rng, n_bootstrap=200)


def test_signals_match_their_definitions():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 3, (50, 4)), rng.integers(0, 4, 50)
    p = torch.softmax(torch.from_numpy(logits), 1).numpy()
    rows = np.arange(50)
    ce = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none")
    np.testing.assert_allclose(signal("loss", logits, labels), -ce.numpy(), rtol=1e-9)
    np.testing.assert_allclose(signal("confidence", logits, labels), p.max(1))
    np.testing.assert_allclose(signal("entropy", logits, labels), (p * np.log(p)).sum(1))
    p_y = p[rows, labels]
    mentr = -(1 - p_y) * np.log(p_y)
    for j in range(4):
        other = labels != j
        mentr[other] -= p[other, j] * np.log(1 - p[other, j])
    np.testing.assert_allclose(signal("modified_entropy", logits, labels), -mentr, rtol=1e-9)
    phi = logit_scaled_confidence(logits, labels)
    np.testing.assert_allclose(phi, np.log(p_y / (1 - p_y)), rtol=1e-6)
    # stays finite where p_y rounds to 1 in float64
    assert np.isfinite(logit_scaled_confidence(np.array([[80.0, 0, 0]]), np.array([0]))).all()
    with pytest.raises(ValueError, match="unknown signal"):
        signal("loss2", logits, labels)


def test_halves_are_balanced():
    keep = assign_halves(101, 6, np.random.default_rng(0))
    assert keep.shape == (6, 101) and (keep.sum(0) == 3).all()
    assert sorted(set(keep.sum(1))) == [50, 51]  # even: pairs of exact halves
    odd = assign_halves(101, 5, np.random.default_rng(0))
    assert (odd.sum(0) == 2).all() and odd.sum(1).min() >= 25  # odd: each record IN for 2
    with pytest.raises(ValueError, match="at least 2"):
        assign_halves(10, 1, np.random.default_rng(0))


def test_class_calibration_is_a_per_class_percentile():
    rng = np.random.default_rng(0)
    pop_labels = np.repeat([0, 1], 500)
    pop = np.where(pop_labels == 0, rng.normal(0, 1, 1000), rng.normal(10, 1, 1000))
    # fresh non-members of both classes land on the same (uniform) scale despite the offset
    labels = np.repeat([0, 1], 2000)
    fresh = np.where(labels == 0, rng.normal(0, 1, 4000), rng.normal(10, 1, 4000))
    calibrated = class_calibrated(fresh, labels, pop, pop_labels)
    for c in (0, 1):
        assert abs(np.median(calibrated[labels == c]) - 0.5) < 0.05
    assert calibrated.min() >= 0 and calibrated.max() < 1 + 1 / (4 * 500)  # + tie-break


def _reference_world(n_records=400, n_refs=8, shift=1.5, seed=0):
    """phi of IN models ~ N(mu_x + shift, 1), OUT ~ N(mu_x, 1), with per-record difficulty mu_x."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n_records)
    keep = assign_halves(n_records, n_refs, rng)
    refs = mu + shift * keep + rng.normal(0, 1, keep.shape)
    is_member = np.arange(n_records) < n_records // 2
    target = mu + shift * is_member + rng.normal(0, 1, n_records)
    return target, refs, keep, is_member


def test_lira_separates_members_and_beats_a_global_threshold():
    target, refs, keep, is_member = _reference_world()
    lira = lira_scores(target, refs, keep)
    scores = lira.scores
    assert set(scores) == set(LIRA_ATTACKS) and not lira.skipped and not lira.floored
    global_threshold = auc(target, is_member).auc
    for name, s in scores.items():
        m = auc(s, is_member)
        assert m.auc > 0.75, name  # per-record calibration removes the difficulty spread
        assert m.auc > global_threshold + 0.1, name
    null_target, null_refs, null_keep, null_is_member = _reference_world(shift=0.0)
    for name, s in lira_scores(null_target, null_refs, null_keep).scores.items():
        m = auc(s, null_is_member)
        assert m.auc_ci[0] <= 0.5 <= m.auc_ci[1], name


def test_rmia_is_chance_without_signal_and_finds_planted_members():
    rng = np.random.default_rng(1)
    n, n_refs, n_pop = 300, 4, 300
    base = rng.uniform(0.2, 0.9, n)
    keep = assign_halves(n, n_refs, rng)
    is_member = np.arange(n) < n // 2
    refs = np.clip(base + rng.normal(0, 0.02, (n_refs, n)), 0, 1)
    pop_base = rng.uniform(0.2, 0.9, n_pop)
    pop_refs = np.clip(pop_base + rng.normal(0, 0.02, (n_refs, n_pop)), 0, 1)
    pop_target = np.clip(pop_base + rng.normal(0, 0.02, n_pop), 0, 1)
    null_target = np.clip(base + rng.normal(0, 0.02, n), 0, 1)
    null = rmia_offline_scores(null_target, refs, keep, pop_target, pop_refs)
    m = auc(null, is_member)
    assert m.auc_ci[0] <= 0.5 <= m.auc_ci[1]
    leaky = np.where(is_member, np.minimum(null_target + 0.08, 1), null_target)
    rmia = auc(rmia_offline_scores(leaky, refs, keep, pop_target, pop_refs), is_member).auc
    # the planted +0.08 hides in the records' spread of difficulty for a global threshold; the
    # offline a = 0.3 only partly divides the difficulty out, a = 1 (p(x) = p_out(x)) fully
    assert rmia > 0.7 and rmia > auc(leaky, is_member).auc + 0.05
    full = rmia_offline_scores(leaky, refs, keep, pop_target, pop_refs, a=1.0)
    assert auc(full, is_member).auc > max(0.9, rmia)


def test_every_attack_runs_with_references():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 2, (40, 3)), rng.integers(0, 3, 40)
    pop_logits, pop_labels = rng.normal(0, 2, (30, 3)), rng.integers(0, 3, 30)
    single, notes = model_attack_scores(logits, labels, pop_logits, pop_labels)
    assert notes == {}
    assert set(single) == {
        *SINGLE_MODEL_SIGNALS,
        *(f"{s}_class_calibrated" for s in SINGLE_MODEL_SIGNALS),
    }
    full, notes = model_attack_scores(
        logits,
        labels,
        pop_logits,
        pop_labels,
        reference_logits=rng.normal(0, 2, (4, 5, 40, 3)),  # 5 augmented queries
        reference_in=assign_halves(40, 4, rng),
        reference_population_logits=rng.normal(0, 2, (4, 30, 3)),
        target_query_logits=np.concatenate([logits[None], rng.normal(0, 2, (4, 40, 3))]),
    )
    assert notes == {}
    assert set(full) == set(single) | set(REFERENCE_ATTACKS)
    assert all(s.shape == (40,) and np.isfinite(s).all() for s in full.values())


def test_overfit_target_leaks_more_than_its_retrained_model(digits):
    """A ResNet20 trained to 100% on 60 digits is attacked from its own outputs, then BN-matched
    images are synthesised from it and a fresh model is retrained on those: the retrained model
    never saw a member, so the attacks on it must do markedly worse."""
    order = np.random.default_rng(0).permutation(len(digits.labels))
    members, nonmembers, population = order[:60], order[60:120], order[260:660]
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    recipe = TrainConfig(epochs=40, batch_size=32)
    fit_on(model, digits, members, recipe, stream="t")
    assert accuracy(model, digits.images[members], digits.labels[members], device="cpu") == 1.0
    labels = balanced_labels(40, 10)
    synthetic = bn_match(
        model,
        labels=labels,
        ks=(100,),
        cfg=BNMatchConfig(group_size=40),
        image_shape=(1, 16, 16),
        seed=0,
        device="cpu",
    ).snapshots[100]
    retrained = retrain(
        synthetic,
        labels,
        model_name="resnet20_cifar10",
        num_classes=10,
        cfg=TrainConfig(epochs=30, batch_size=32),
        seed=0,
        stream="r",
        device="cpu",
    )
    candidates = np.r_[members, nonmembers]
    is_member = np.r_[np.ones(60, bool), np.zeros(60, bool)]

    def attack(m):
        scores, _ = model_attack_scores(
            predict_logits(m, digits.images[candidates], device="cpu").numpy(),
            digits.labels[candidates],
            predict_logits(m, digits.images[population], device="cpu").numpy(),
            digits.labels[population],
        )
        return {name: auc(s, is_member) for name, s in scores.items()}

    target, after = attack(model), attack(retrained)
    assert target["loss"].auc > 0.65 and target["loss"].auc_ci[0] > 0.5
    assert target["loss"].auc > after["loss"].auc + 0.1
    assert max(m.auc for m in target.values()) > max(m.auc for m in after.values())


def test_class_calibration_keeps_the_raw_order_inside_a_level():
    """Candidates beyond every population record keep their raw order (no block of ties)."""
    pop, pop_labels = np.arange(10.0), np.zeros(10, int)
    scores = np.array([20.0, 30.0, 25.0, 5.0])
    calibrated = class_calibrated(scores, np.zeros(4, int), pop, pop_labels)
    assert list(np.argsort(calibrated)) == [3, 0, 2, 1]
    assert calibrated[:3].min() >= 1.0 and calibrated[3] < 1.0


def test_lira_with_too_few_references_says_so_and_never_degenerates():
    """N = 2: one IN and one OUT model per record, so no per-record variance can be fitted; with
    N = 3 the offline variants (2 OUT) run and the online ones (1 IN) do not."""
    target, refs, keep, _ = _reference_world(n_refs=2)
    two = lira_scores(target, refs, keep)
    assert two.scores == {} and set(two.skipped) == set(LIRA_ATTACKS)
    assert all("needs 2 OUT references" in why for why in two.skipped.values())
    target, refs, keep, _ = _reference_world(n_refs=3)
    three = lira_scores(target, refs, keep)
    assert set(three.scores) == {"lira_offline", "lira_offline_fixed_var"}
    assert set(three.skipped) == {"lira_online", "lira_online_fixed_var"}
    assert all(np.isfinite(s).all() for s in three.scores.values()) and not three.floored
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 2, (40, 3)), rng.integers(0, 3, 40)
    scores, notes = model_attack_scores(
        logits,
        labels,
        rng.normal(0, 2, (30, 3)),
        rng.integers(0, 3, 30),
        reference_logits=rng.normal(0, 2, (2, 40, 3)),
        reference_in=assign_halves(40, 2, rng),
        reference_population_logits=rng.normal(0, 2, (2, 30, 3)),
    )
    assert "rmia_offline" in scores and not set(LIRA_ATTACKS) & set(scores)
    assert all(note.startswith("not run: needs 2") for note in notes.values())


def test_a_zero_variance_is_floored_out_loud():
    target, refs, keep, _ = _reference_world(n_refs=4)
    refs[:, 0] = 1.0  # record 0: every reference model gives the same confidence
    lira = lira_scores(target, refs, keep)
    assert lira.floored["lira_online"] == 1 and lira.floored["lira_offline"] == 1


def test_augmented_queries_average_out_query_noise():
    """Each query of a record sees independent noise: averaging the per-query scores over 8
    queries separates members better than one query."""
    rng = np.random.default_rng(3)
    n, n_refs, queries = 400, 8, 8
    mu = rng.normal(0, 3, n)
    keep = assign_halves(n, n_refs, rng)
    is_member = np.arange(n) < n // 2
    noise = 2.0
    refs = (mu + 1.0 * keep)[:, None, :] + rng.normal(0, noise, (n_refs, queries, n))
    target = (mu + 1.0 * is_member)[None] + rng.normal(0, noise, (queries, n))
    one = lira_scores(target[:1], refs[:, :1], keep).scores["lira_online"]
    many = lira_scores(target, refs, keep).scores["lira_online"]
    assert auc(many, is_member).auc > auc(one, is_member).auc + 0.05


def test_query_views_shift_and_mirror():
    from attacks.references import query_views, shifted

    images = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
    right = shifted(images, 0, 1)
    assert (right[:, :, 0] == 0).all() and np.array_equal(right[:, :, 1:], images[:, :, :-1])
    down = shifted(images, 1, 0)
    assert (down[:, 0] == 0).all() and np.array_equal(down[:, 1:], images[:, :-1])
    assert len(query_views(images, augment=True, hflip=False)) == 5
    views = query_views(images, augment=True, hflip=True)
    assert len(views) == 10 and np.array_equal(views[0], images)
    assert np.array_equal(views[5], images[:, :, ::-1])
    assert len(query_views(images, augment=False, hflip=True)) == 1


def test_references_train_on_as_many_records_as_the_target():
    """The default split gives as many non-members as members, so each reference model (half
    the pool) trains on exactly as many records as the target; unequal caps are called out."""
    from attacks.references import reference_size_note
    from audit.core.config import build_config
    from audit.core.data import load_dataset
    from audit.core.splits import split_dataset

    config = build_config(preset="quick")
    split = split_dataset(
        load_dataset("digits", None, image_size=16),
        seed=0,
        member_fraction=config.member_fraction,
        nonmember_fraction=config.nonmember_fraction,
        max_members=config.max_members,
        max_nonmembers=config.max_nonmembers,
        max_test=config.max_test,
    )
    assert len(split.members) == len(split.nonmembers) == 629
    pool = len(split.members) + len(split.nonmembers)
    keep = assign_halves(pool, 4, np.random.default_rng(0))
    assert (keep.sum(axis=1) == len(split.members)).all()
    assert reference_size_note(629, 629) is None
    note = reference_size_note(1000, 500)
    assert note is not None and "half the pool (750 records), the target on its 1000" in note
