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

How far an audit can reach is fixed before any score is seen: even a perfect attack (every guess
right) refutes no epsilon above `reach(canaries=m, ...)`, about 3.1 with 100 canaries and 5.4 with
1,000 at delta 1e-5 and 95%. A claim at or above the reach is not confirmed by a passing audit: the
audit is uninformative about it (`claim_status`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
GUESS_SHARES = (0.1, 0.2, 0.5, 1.0)  # r as a share of m (Bonferroni over these)


def _check_guesses(canaries: int, guesses: int, correct: int, delta: float) -> None:
    if not 0 < guesses <= canaries:
        raise ValueError(f"guesses must lie in [1, canaries={canaries}], got {guesses}")
    if not 0 <= correct <= guesses:
        raise ValueError(f"correct must lie in [0, guesses={guesses}], got {correct}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[at least `correct` right of `guesses` guesses] under (epsilon, delta)-DP (Steinke et
    al. 2023, Theorem 5.2): the binomial tail at q = e^eps / (1 + e^eps) plus the delta term
    2 m delta max_i P[correct - i <= Binomial(r, q) < correct] / i, m canaries, r guesses.

    Args:
        canaries: m, the canaries each included by a fair coin, >= 1.
        guesses: r, how many canaries the attack guesses about, in [1, m].
        correct: right guesses among them, in [0, r].
        epsilon: the claim's epsilon, >= 0.
        delta: the claim's delta, in [0, 1).

    Returns:
        The p-value in [0, 1]: small is evidence against the claim.

    Raises:
        ValueError: a count or privacy parameter out of its range.
    """
    _check_guesses(canaries, guesses, correct, delta)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if correct <= 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(correct - 1, guesses, q))
    # below[i - 1] = P[correct - i <= Binomial(r, q) < correct], i = 1..correct, in one call
    below = np.cumsum(stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q))
    alpha = float(np.max(below / np.arange(1, correct + 1)))
    return min(1.0, beta + 2 * canaries * delta * alpha)


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, level: float
) -> float:
    """The largest epsilon whose p-value stays below `level` (0 if even epsilon 0 is not
    rejected): bisection, the p-value growing with epsilon.

    Args:
        canaries: m, >= 1.
        guesses: r, in [1, m].
        correct: right guesses, in [0, r].
        delta: in [0, 1).
        level: the test's level, in (0, 1): the bound holds with confidence 1 - level.

    Returns:
        epsilon >= 0, to about 1e-15 relative; capped below 100.

    Raises:
        ValueError: a count or parameter out of its range.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")

    def p(epsilon: float) -> float:
        return p_value(
            canaries=canaries, guesses=guesses, correct=correct, epsilon=epsilon, delta=delta
        )

    if p(0.0) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p(high) < level:
        low, high = high, 2 * high
        if high > 100:
            return low
    for _ in range(50):
        mid = (low + high) / 2
        if p(mid) < level:
            low = mid
        else:
            high = mid
    return low


def guess_counts(m: int, shares: tuple[float, ...] = GUESS_SHARES) -> list[int]:
    """The guess counts r tried with m canaries: each share of m, even, at least 2.

    Args:
        m: the canaries (a count >= 0).
        shares: guess counts as shares of m, each in (0, 1]; a share giving fewer than 2 is
            dropped.

    Returns:
        Sorted distinct counts, each even in [2, m]; [m] when none fits and m >= 1, [] for m = 0.
    """
    counts = sorted({max(2, 2 * round(share * m / 2)) for share in shares if share * m >= 2})
    return [r for r in counts if r <= m] or ([m] if m >= 1 else [])


def best_correct(*, canaries: int, guesses: int, included: int | None) -> int:
    """The most of r guesses (r // 2 "in", the rest "out") that can be right when `included` of
    the m canaries are in.

    Args:
        canaries: m, >= 1.
        guesses: r, in [1, m].
        included: canaries whose coin put them in, in [0, m]; None: unknown (all r can be).

    Returns:
        A count in [0, r].
    """
    m, r = canaries, guesses
    if included is None:
        return r
    return r - max(0, r // 2 - included) - max(0, (r - r // 2) - (m - included))


def reach(
    *,
    canaries: int,
    delta: float,
    confidence: float = CONFIDENCE,
    shares: tuple[float, ...] = GUESS_SHARES,
    included: int | None = None,
) -> float:
    """eps_audit_max: the largest bound an audit with m canaries (`included` of them in, where
    known) can give, every guess that can be right right (the best guess count, at the same
    Bonferroni split as `audit_canaries`). No claim at or above it can be refuted by this audit,
    whatever the attack: the bound grows with the right guesses while 2 m delta <= 1 (checked
    by the config), so a perfect attack is the best case.

    Args:
        canaries: m, the canaries (a count >= 0).
        delta: the claim's delta, in [0, 1) (with 2 m delta <= 1 for the argument above).
        confidence: the bound's confidence, in (0, 1), split among the guess counts.
        shares: guess counts as shares of m, each in (0, 1] (see guess_counts).
        included: canaries whose coin put them in, in [0, m]; None: unknown (every guess can be
            right).

    Returns:
        eps_audit_max, >= 0 (0 when m gives no guess count).
    """
    counts = guess_counts(canaries, shares)
    level = (1 - confidence) / max(len(counts), 1)
    return max(
        (
            epsilon_lower_bound(
                canaries=canaries,
                guesses=r,
                correct=best_correct(canaries=canaries, guesses=r, included=included),
                delta=delta,
                level=level,
            )
            for r in counts
        ),
        default=0.0,
    )


@dataclass(frozen=True)
class CanaryAudit:
    eps_audit: float  # the lower bound at `confidence`
    confidence: float
    m: int  # canaries
    guesses: int  # r of the best bound
    correct: int  # right guesses among them
    eps_audit_max: float = 0.0  # the bound a perfect attack would give (`reach`)
    # each guess count's (r, correct): what the claim's p-value is computed from
    counts: tuple[tuple[int, int], ...] = ()
    included: int | None = None  # canaries in (a perfect attack's best is bounded by it)

    def to_dict(self) -> dict[str, float | int]:
        """The audit's summary columns for a report row.

        Returns:
            eps_audit, eps_audit_max, eps_audit_confidence, canaries (m), canary_guesses (the best
            bound's r) and canary_correct (its right guesses).
        """
        return {
            "eps_audit": self.eps_audit,
            "eps_audit_max": self.eps_audit_max,
            "eps_audit_confidence": self.confidence,
            "canaries": self.m,
            "canary_guesses": self.guesses,
            "canary_correct": self.correct,
        }

    def claim_p_value(self, epsilon: float, delta: float) -> float:
        """The p-value of "the mechanism is (epsilon, delta)-DP" from this audit's guesses,
        Bonferroni over its guess counts (the same split as eps_audit: the p-value is below
        1 - confidence exactly when eps_audit > epsilon).

        Args:
            epsilon: the claim's epsilon, >= 0.
            delta: the claim's delta, in [0, 1).

        Returns:
            The p-value in [0, 1]: 1.0 when the audit made no guesses.
        """
        if not self.counts:
            return 1.0
        smallest = min(
            p_value(canaries=self.m, guesses=r, correct=c, epsilon=epsilon, delta=delta)
            for r, c in self.counts
        )
        return min(1.0, smallest * len(self.counts))


def audit_canaries(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    shares: tuple[float, ...] = GUESS_SHARES,
) -> CanaryAudit:
    """eps_audit from each canary's score (higher = more likely trained on) and its coin.
    Ties in score are broken by canary order, which is independent of the coins.

    Args:
        scores: (m,) float, each canary's membership score; NaN ranks lowest.
        included: (m,) bool, each canary's coin: True where it was in the training set.
        delta: the claim's delta, in [0, 1).
        confidence: the bound's confidence, in (0, 1), split among the guess counts.
        shares: guess counts as shares of m, each in (0, 1] (see guess_counts).

    Returns:
        The best bound eps_audit >= 0 with its r and right guesses, eps_audit_max (reach),
        every guess count's (r, correct) and the canaries in.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    counts = guess_counts(m, shares)
    level = (1 - confidence) / max(len(counts), 1)
    found: list[tuple[int, int]] = []
    best_bound, best_r, best_right = 0.0, 0, 0
    for r in counts:
        top, bottom = order[: r // 2], order[m - (r - r // 2) :]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        found.append((r, correct))
        bound = epsilon_lower_bound(
            canaries=m, guesses=r, correct=correct, delta=delta, level=level
        )
        if bound > best_bound:
            best_bound, best_r, best_right = bound, r, correct
    k = int(included.sum())
    ceiling = reach(canaries=m, delta=delta, confidence=confidence, shares=shares, included=k)
    return CanaryAudit(best_bound, confidence, m, best_r, best_right, ceiling, tuple(found), k)


ClaimStatus = str  # "refuted" | "not refuted" | "uninformative" | "not audited" | "not formal"


def claim_status(eps_audit: float, eps_audit_max: float, claim: float) -> ClaimStatus:
    """What an audit says of a claim: refuted (eps_audit above it), uninformative (the claim at
    or above what a perfect attack could refute: passing says nothing), else not refuted.

    Args:
        eps_audit: the audit's lower bound, >= 0.
        eps_audit_max: what a perfect attack could reach (reach), >= 0.
        claim: the claimed epsilon, >= 0.

    Returns:
        "refuted", "uninformative" or "not refuted".
    """
    if eps_audit > claim:
        return "refuted"
    if claim >= eps_audit_max:
        return "uninformative"
    return "not refuted"


def audit_scores(
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    delta: float,
    claim: float | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """One row's canary columns from several scores, each (scores, coins) of its own canaries:
    the confidence split evenly among the scores (Bonferroni), the best bound kept, with what a
    perfect attack could reach (eps_audit_max) and, given the row's claimed epsilon, the claim's
    p-value (Bonferroni over scores and guess counts) and status.

    Args:
        scores: score name -> ((m,) float scores, (m,) bool coins) of that score's canaries.
        delta: the claim's delta, in [0, 1).
        claim: the row's claimed epsilon, >= 0; None: no claim, no dp_claim_* columns.
        confidence: the overall confidence, in (0, 1), split among the scores.

    Returns:
        The best score's CanaryAudit.to_dict() columns (eps_audit_confidence overall,
        eps_audit_max the largest over scores), eps_audit_score (the best score's name, None
        when no bound is above 0), eps_audit_<name>, eps_audit_max_<name> and canaries_<name>
        per score; with a claim, dp_claim_p, dp_claim_p_min (a perfect attack's), dp_claim_status
        and dp_claim_violated.

    Raises:
        ValueError: no scores.
    """
    if not scores:
        raise ValueError("audit_scores needs at least one score")
    each = 1 - (1 - confidence) / len(scores)
    audits = {
        name: audit_canaries(values, coins, delta=delta, confidence=each)
        for name, (values, coins) in scores.items()
    }
    best_name = max(audits, key=lambda name: audits[name].eps_audit)
    best = audits[best_name]
    columns: dict[str, Any] = {
        **best.to_dict(),
        "eps_audit_confidence": confidence,  # overall, after the split among scores
        "eps_audit_score": best_name if best.eps_audit > 0 else None,  # none refutes eps 0
        "eps_audit_max": max(a.eps_audit_max for a in audits.values()),
    }
    for name, found in audits.items():
        columns[f"eps_audit_{name}"] = found.eps_audit
        columns[f"eps_audit_max_{name}"] = found.eps_audit_max
        columns[f"canaries_{name}"] = found.m
    if claim is not None:
        smallest = min(found.claim_p_value(claim, delta) for found in audits.values())
        columns["dp_claim_p"] = min(1.0, smallest * len(audits))
        # the p-value a perfect attack would get: a level below it cannot be reached, so a
        # gate at that level is uninformative about this claim
        perfect = min(
            dataclasses.replace(
                found,
                counts=tuple(
                    (r, best_correct(canaries=found.m, guesses=r, included=found.included))
                    for r, _c in found.counts
                ),
            ).claim_p_value(claim, delta)
            for found in audits.values()
        )
        columns["dp_claim_p_min"] = min(1.0, perfect * len(audits))
        status = claim_status(best.eps_audit, columns["eps_audit_max"], claim)
        columns["dp_claim_status"] = status
        columns["dp_claim_violated"] = status == "refuted"
    return columns
