"""Membership-inference metrics shared by every attack: ROC, AUC, TPR at low FPR, balanced
accuracy, confidence intervals and an empirical epsilon lower bound.

Convention: higher score = "member". Pure functions on numpy arrays; randomness (the bootstrap)
comes from an explicit numpy Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import hypergeom, mannwhitneyu
from sklearn.metrics import roc_auc_score, roc_curve

from audit.core.stats import clopper_pearson


@dataclass(frozen=True)
class AttackMetrics:
    auc: float
    auc_ci: tuple[float, float]  # percentile bootstrap
    # target FPR -> best TPR with FPR <= target; None where the non-members cannot resolve that
    # FPR (fewer than 1/target of them: the figure would be TPR at zero false positives)
    tpr_at_fpr: dict[float, float | None]
    balanced_accuracy: float  # best over thresholds
    eps_lower: float  # (epsilon, delta) estimate at eps_delta, best over thresholds (0 if none)
    eps_delta: float
    p_value: float  # one-sided Mann-Whitney test of "members score higher" (AUC > 0.5)
    n_members: int
    n_nonmembers: int
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR over thresholds whose FPR does not exceed target (fpr/tpr from every
    threshold: sklearn's drop_intermediate would drop real ones on tied scores).

    Args:
        fpr: (t,) float64 false-positive rates in [0, 1], one per threshold.
        tpr: (t,) float64 true-positive rates in [0, 1], aligned with fpr.
        target: the largest false-positive rate allowed, in [0, 1].

    Returns:
        The TPR in [0, 1]; 0.0 when no threshold has an FPR <= target.
    """
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def resolvable(target_fpr: float, n_nonmembers: int) -> bool:
    """Whether n non-members can show an FPR of target at all: one false positive is 1/n.

    Args:
        target_fpr: the false-positive rate, in (0, 1].
        n_nonmembers: the non-members scored (a count >= 0).

    Returns:
        True when n_nonmembers * target_fpr >= 1 (to 1e-9).
    """
    return n_nonmembers * target_fpr >= 1 - 1e-9


def roc_epsilon_estimate(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    alpha: float = 0.05,
    delta: float = 0.0,
) -> float:
    """The epsilon of (epsilon, delta)-DP that the attack's error rates imply: (eps, delta)-DP
    forces TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta at every threshold, so
    eps >= max over thresholds of log((TPR_lo - delta) / FPR_hi) and log((TNR_lo - delta) /
    FNR_hi), with one-sided Clopper-Pearson bounds (each at 1 - alpha/2). delta = 0 gives pure
    epsilon. The max over thresholds is taken on the same data and the scores come from one
    trained pipeline, so this is an audit estimate, not a bound that holds with confidence
    1 - alpha.

    Args:
        member_scores: (n_in,) float, the members' attack scores (higher = member), n_in >= 1.
        nonmember_scores: (n_out,) float, the non-members' scores, n_out >= 1.
        alpha: the error split between the two one-sided bounds (alpha / 2 each), in (0, 1).
        delta: the delta of (epsilon, delta)-DP, in [0, 1); 0 for pure epsilon.

    Returns:
        The epsilon estimate, >= 0 (0 where no threshold gives a positive finite one).
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    n_in, n_out = len(members), len(nonmembers)
    thresholds = np.unique(np.concatenate([members, nonmembers]))
    # predicted member when score >= t
    tp = n_in - np.searchsorted(np.sort(members), thresholds, side="left")
    fp = n_out - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    a = alpha / 2
    tpr_lo = clopper_pearson(tp, n_in, alpha=a, upper=False)
    fpr_hi = clopper_pearson(fp, n_out, alpha=a, upper=True)
    tnr_lo = clopper_pearson(n_out - fp, n_out, alpha=a, upper=False)
    fnr_hi = clopper_pearson(n_in - tp, n_in, alpha=a, upper=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.concatenate(
            [
                np.log(np.maximum(tpr_lo - delta, 0) / fpr_hi),
                np.log(np.maximum(tnr_lo - delta, 0) / fnr_hi),
            ]
        )
    best = float(np.nanmax(ratios)) if len(ratios) else 0.0
    return max(0.0, best) if math.isfinite(best) else 0.0


def evaluate_attack(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    rng: np.random.Generator,
    fpr_targets: tuple[float, ...] = (0.001, 0.01),
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    delta: float = 0.0,
) -> AttackMetrics:
    """Every metric of one attack from its members' and non-members' scores: AUC with a
    bootstrap interval, TPR at low FPR, balanced accuracy, the epsilon estimate and a
    Mann-Whitney p-value.

    Args:
        member_scores: (n_in,) float, finite, the members' attack scores (higher = member),
            n_in >= 1.
        nonmember_scores: (n_out,) float, finite, the non-members' scores, n_out >= 1.
        rng: draws the bootstrap resamples (a seeded numpy Generator).
        fpr_targets: false-positive rates in (0, 1] at which to report the TPR.
        n_bootstrap: bootstrap resamples for the AUC interval (a count >= 1).
        alpha: in (0, 1): the AUC interval is the (alpha / 2, 1 - alpha / 2) percentile one, and
            the epsilon estimate's bounds are at alpha / 2 each.
        delta: the delta of the epsilon estimate, in [0, 1).

    Returns:
        AttackMetrics: the AUC in [0, 1] and its interval, TPR per target (None where fewer than
        1 / target non-members), balanced accuracy, eps_lower >= 0, the p-value, the counts and
        the full ROC (fpr, tpr).

    Raises:
        ValueError: no member or no non-member score, or a score that is not finite.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("an attack needs at least one member and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("attack scores must be finite")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    scores = np.concatenate([members, nonmembers])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    auc = float(roc_auc_score(labels, scores))
    boot = bootstrap_aucs(members, nonmembers, rng, n_bootstrap)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return AttackMetrics(
        auc=auc,
        auc_ci=(float(low), float(high)),
        tpr_at_fpr={
            t: tpr_at_fpr(fpr, tpr, t) if resolvable(t, len(nonmembers)) else None
            for t in fpr_targets
        },
        balanced_accuracy=float(((tpr + 1 - fpr) / 2).max()),
        eps_lower=roc_epsilon_estimate(members, nonmembers, alpha=alpha, delta=delta),
        eps_delta=delta,
        p_value=float(mannwhitneyu(members, nonmembers, alternative="greater").pvalue),
        n_members=len(members),
        n_nonmembers=len(nonmembers),
        fpr=fpr,
        tpr=tpr,
    )


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half), O((n + m) log(n + m))."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([members, nonmembers]))
    n_in, n_out = len(members), len(nonmembers)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


BOOTSTRAP_CHUNK = 2**21  # scores ranked at once: resamples x (members + non-members)


def bootstrap_aucs(
    members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator, n_bootstrap: int
) -> np.ndarray:
    """Mann-Whitney AUCs (ties count half) of n_bootstrap resamples, members and non-members
    resampled separately. The draws are those of one rng.choice(members) and one
    rng.choice(nonmembers) per resample, in that order (one integers() call with per-column
    bounds consumes the stream the same way; a test holds it to the loop), and the resamples
    are ranked a chunk of rows at a time: one vectorised call instead of a thousand.

    Args:
        members: (n_in,) float64, the members' scores (higher = member), n_in >= 1.
        nonmembers: (n_out,) float64, the non-members' scores, n_out >= 1.
        rng: draws the resamples (a seeded numpy Generator), consumed as above.
        n_bootstrap: the resamples (a count >= 0).

    Returns:
        (n_bootstrap,) float64 AUCs in [0, 1].
    """
    from scipy.stats import rankdata

    n_in, n_out = len(members), len(nonmembers)
    pool = np.concatenate([members, nonmembers])
    bounds = np.concatenate([np.full(n_in, n_in), np.full(n_out, n_out)])
    offsets = np.concatenate([np.zeros(n_in, dtype=np.int64), np.full(n_out, n_in)])
    rows = max(1, BOOTSTRAP_CHUNK // (n_in + n_out))
    aucs = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, rows):
        count = min(rows, n_bootstrap - start)
        picks = rng.integers(0, np.broadcast_to(bounds, (count, n_in + n_out)), dtype=np.int64)
        ranks = rankdata(pool[picks + offsets], axis=1)
        aucs[start : start + count] = (ranks[:, :n_in].sum(axis=1) - n_in * (n_in + 1) / 2) / (
            n_in * n_out
        )
    return aucs


@dataclass(frozen=True)
class Selection:
    """The strongest of several attacks, chosen on one half of the candidates (by AUC) and
    measured on the other: the worst case over attacks without the upward bias of taking the max
    of many noisy estimates on the same data."""

    attack: str
    metrics: AttackMetrics  # on the evaluation half
    selection_auc: dict[str, float]  # every attack's AUC on the selection half
    threshold: float  # the chosen attack's threshold with the most significant split (selection)
    p_threshold: float  # one-sided Fisher test at that threshold, on the evaluation half
    p_value: float  # the gate's: 2 x min(AUC test, threshold test), both on the evaluation half


def _fisher_greater(members: np.ndarray, nonmembers: np.ndarray, thresholds: np.ndarray):
    """One-sided Fisher exact p-values of "members reach each threshold more often than
    non-members" (predict member when score >= threshold)."""
    n_in, n_out = len(members), len(nonmembers)
    hits_in = n_in - np.searchsorted(np.sort(members), thresholds, side="left")
    hits_out = n_out - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    return hypergeom.sf(hits_in - 1, n_in + n_out, n_in, hits_in + hits_out)


def threshold_test(
    select_members: np.ndarray,
    select_nonmembers: np.ndarray,
    eval_members: np.ndarray,
    eval_nonmembers: np.ndarray,
) -> tuple[float, float]:
    """(threshold, p): the threshold whose split is most significant on the selection half, and
    its one-sided Fisher p-value on the evaluation half. It sees what an AUC test averages away:
    a few members exposed at (near) zero false positives.

    Args:
        select_members: (a,) float, the selection half's member scores (higher = member).
        select_nonmembers: (b,) float, the selection half's non-member scores; a + b >= 1.
        eval_members: (c,) float, the evaluation half's member scores.
        eval_nonmembers: (d,) float, the evaluation half's non-member scores.

    Returns:
        (threshold, p): the chosen threshold, one of the selection half's scores (member
        predicted at score >= threshold), and its one-sided Fisher p-value in [0, 1] on the
        evaluation half.
    """
    thresholds = np.unique(np.concatenate([select_members, select_nonmembers]))
    chosen = float(
        thresholds[np.argmin(_fisher_greater(select_members, select_nonmembers, thresholds))]
    )
    p = float(_fisher_greater(eval_members, eval_nonmembers, np.array([chosen]))[0])
    return chosen, p


def selection_halves(is_member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True for the selection half: half the members and half the non-members, at random.

    Args:
        is_member: (n,) bool, True for the members among the candidates.
        rng: draws the halves (a seeded numpy Generator).

    Returns:
        (n,) bool, True for the selection half: floor(half) of the members and of the
        non-members.
    """
    is_member = np.asarray(is_member, bool)
    select = np.zeros(len(is_member), bool)
    for group in (np.flatnonzero(is_member), np.flatnonzero(~is_member)):
        select[rng.choice(group, len(group) // 2, replace=False)] = True
    return select


def select_strongest(
    scores: dict[str, np.ndarray],
    is_member: np.ndarray,
    select: np.ndarray,
    *,
    rng: np.random.Generator,
    delta: float = 0.0,
    n_bootstrap: int = 1000,
) -> Selection:
    """Choose the attack with the highest AUC on candidates[select], evaluate it on the rest:
    its metrics, and the gate's p-value, twice the smaller of its AUC test (Mann-Whitney) and its
    threshold test (the threshold chosen on the selection half), both on the rest.

    Args:
        scores: attack name -> (n,) float scores of every candidate (higher = member).
        is_member: (n,) bool, True for the members.
        select: (n,) bool, True for the selection half (selection_halves), False for evaluation.
        rng: draws the evaluation's bootstrap (a seeded numpy Generator).
        delta: the delta of the epsilon estimate, in [0, 1).
        n_bootstrap: bootstrap resamples for the AUC interval (a count >= 1).

    Returns:
        The chosen attack (equal AUCs: the greatest name), its metrics on the evaluation half,
        every attack's selection AUC, the threshold, its p-value, and the gate's p-value in [0, 1].

    Raises:
        ValueError: no attacks; or (evaluate_attack) the evaluation half lacks members or
            non-members, or holds a score that is not finite.
    """
    is_member = np.asarray(is_member, bool)
    if not scores:
        raise ValueError("no attacks to choose from")
    aucs = {name: _auc(s[select & is_member], s[select & ~is_member]) for name, s in scores.items()}
    best = max(aucs, key=lambda name: (aucs[name], name))
    held = ~select
    chosen = scores[best]
    metrics = evaluate_attack(
        chosen[held & is_member],
        chosen[held & ~is_member],
        rng=rng,
        delta=delta,
        n_bootstrap=n_bootstrap,
    )
    threshold, p_threshold = threshold_test(
        chosen[select & is_member],
        chosen[select & ~is_member],
        chosen[held & is_member],
        chosen[held & ~is_member],
    )
    p_value = min(1.0, 2 * min(metrics.p_value, p_threshold))
    return Selection(best, metrics, aucs, threshold, p_threshold, p_value)
