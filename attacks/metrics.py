"""Membership-inference metrics shared by every attack: ROC, AUC, TPR at low FPR, balanced
accuracy, confidence intervals and an empirical epsilon lower bound.

Convention: higher score = "member". Pure functions on numpy arrays; randomness (the bootstrap)
comes from an explicit numpy Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass(frozen=True)
class AttackMetrics:
    auc: float
    auc_ci: tuple[float, float]  # percentile bootstrap
    tpr_at_fpr: dict[float, float]  # target FPR -> best TPR with FPR <= target
    balanced_accuracy: float  # best over thresholds
    eps_lower: float  # one-sided Clopper-Pearson bound, best over thresholds (0 if none)
    n_members: int
    n_nonmembers: int
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)


def clopper_pearson(successes: np.ndarray, trials: int, *, alpha: float, upper: bool) -> np.ndarray:
    """One-sided exact binomial bound at confidence 1 - alpha, elementwise over successes."""
    k = np.asarray(successes, dtype=np.float64)
    if upper:
        bound = beta.ppf(1 - alpha, k + 1, trials - k)
        return np.where(k >= trials, 1.0, bound)
    bound = beta.ppf(alpha, k, trials - k + 1)
    return np.where(k <= 0, 0.0, bound)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR over thresholds whose FPR does not exceed target."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def epsilon_lower_bound(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, *, alpha: float = 0.05
) -> float:
    """eps >= max over thresholds of log(TPR_lo / FPR_hi) and log(TNR_lo / FNR_hi), with
    one-sided Clopper-Pearson bounds (each at 1 - alpha/2, so a threshold's pair holds jointly
    at 1 - alpha). The max over thresholds is taken on the same data, as peers do; treat it as an
    audit estimate, not a certificate."""
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
    with np.errstate(divide="ignore"):
        ratios = np.concatenate([np.log(tpr_lo / fpr_hi), np.log(tnr_lo / fnr_hi)])
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
) -> AttackMetrics:
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("an attack needs at least one member and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("attack scores must be finite")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    scores = np.concatenate([members, nonmembers])
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = float(roc_auc_score(labels, scores))
    boot = []
    for _ in range(n_bootstrap):  # resample members and non-members separately
        m = rng.choice(members, len(members))
        n = rng.choice(nonmembers, len(nonmembers))
        boot.append(_auc(m, n))
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return AttackMetrics(
        auc=auc,
        auc_ci=(float(low), float(high)),
        tpr_at_fpr={t: tpr_at_fpr(fpr, tpr, t) for t in fpr_targets},
        balanced_accuracy=float(((tpr + 1 - fpr) / 2).max()),
        eps_lower=epsilon_lower_bound(members, nonmembers, alpha=alpha),
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
