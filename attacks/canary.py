"""Auditing an epsilon claim in one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

m canary records are each included in the private training set by an independent fair coin.
After training, every canary gets a membership score; the auditor guesses "in" for the r/2
highest and "out" for the r/2 lowest, abstaining on the rest. Under (epsilon, delta)-DP the
number of correct guesses is dominated by Binomial(r, e^eps / (1 + e^eps)) up to a delta term
(their Theorem 5.2 / Algorithm 3), so many correct guesses refute small epsilons: eps_audit is
the largest epsilon the observed count rejects at the stated confidence.

eps_audit is a LOWER bound on the true epsilon that holds with that confidence whatever the
scores are; a weak score only makes it small (black-box audits of synthetic data are loose:
Annamalai et al. 2024). It contradicts the accountant's claim when eps_audit > eps_accountant.

Several guess counts r are tried; the confidence is split among them (Bonferroni), so choosing
the best r does not inflate the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
GUESS_SHARES = (0.1, 0.2, 0.5, 1.0)  # r as a share of m (Bonferroni over these)


def p_value(m: int, r: int, correct: int, epsilon: float, delta: float) -> float:
    """P[at least `correct` right of r guesses] under (epsilon, delta)-DP, with m canaries:
    the binomial tail at q = e^eps / (1 + e^eps) plus Steinke et al.'s delta term,
    2 m delta max_i P[correct - i <= Binomial(r, q) < correct] / i."""
    if correct <= 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(correct - 1, r, q))
    alpha, below = 0.0, 0.0
    for i in range(1, correct + 1):
        below += float(stats.binom.pmf(correct - i, r, q))
        alpha = max(alpha, below / i)
    return min(1.0, beta + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, correct: int, delta: float, level: float) -> float:
    """The largest epsilon whose p-value stays below `level` (0 if even epsilon 0 is not
    rejected): bisection, the p-value growing with epsilon."""
    if p_value(m, r, correct, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, correct, high, delta) < level:
        low, high = high, 2 * high
        if high > 100:
            return low
    for _ in range(50):
        mid = (low + high) / 2
        if p_value(m, r, correct, mid, delta) < level:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class CanaryAudit:
    eps_audit: float  # the lower bound at `confidence`
    confidence: float
    m: int  # canaries
    guesses: int  # r of the best bound
    correct: int  # right guesses among them

    def to_dict(self) -> dict[str, float | int]:
        return {
            "eps_audit": self.eps_audit,
            "eps_audit_confidence": self.confidence,
            "canaries": self.m,
            "canary_guesses": self.guesses,
            "canary_correct": self.correct,
        }


def audit_canaries(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    shares: tuple[float, ...] = GUESS_SHARES,
) -> CanaryAudit:
    """eps_audit from each canary's score (higher = more likely trained on) and its coin.
    Ties in score are broken by canary order, which is independent of the coins."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    counts = sorted({max(2, 2 * round(share * m / 2)) for share in shares if share * m >= 2})
    counts = [r for r in counts if r <= m] or ([m] if m else [])
    level = (1 - confidence) / max(len(counts), 1)
    best = CanaryAudit(0.0, confidence, m, 0, 0)
    for r in counts:
        top, bottom = order[: r // 2], order[m - (r - r // 2) :]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        bound = epsilon_lower_bound(m, r, correct, delta, level)
        if bound > best.eps_audit:
            best = CanaryAudit(bound, confidence, m, r, correct)
    return best
