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
    threshold: sklearn's drop_intermediate would drop real ones on tied scores)."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def resolvable(target_fpr: float, n_nonmembers: int) -> bool:
    """Whether n non-members can show an FPR of target at all: one false positive is 1/n."""
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
    1 - alpha."""
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
    are ranked a chunk of rows at a time: one vectorised call instead of a thousand."""
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
    a few members exposed at (near) zero false positives."""
    thresholds = np.unique(np.concatenate([select_members, select_nonmembers]))
    chosen = float(
        thresholds[np.argmin(_fisher_greater(select_members, select_nonmembers, thresholds))]
    )
    p = float(_fisher_greater(eval_members, eval_nonmembers, np.array([chosen]))[0])
    return chosen, p


def selection_halves(is_member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True for the selection half: half the members and half the non-members, at random."""
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
    threshold test (the threshold chosen on the selection half), both on the rest."""
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
