"""Membership inference against a classifier, from its logits on candidate records.

Pure functions on numpy arrays; higher score = "member". Three kinds:

* single-model signals (no reference models): loss, confidence (max softmax, label-free),
  entropy (label-free, Salem et al. 2019), modified entropy (Song & Mittal 2021), each also
  *class-calibrated*: the signal's percentile among population records (never trained on) of the
  candidate's class, i.e. a per-class threshold;
* LiRA (Carlini et al. 2022) online and offline, each with per-example or one global (fixed)
  variance, on the logit-scaled confidence of N reference models;
* RMIA offline (Zarifzadeh et al. 2024): the likelihood ratio of a candidate against population
  records, with the reference models' average probability as the denominator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm

SINGLE_MODEL_SIGNALS = ("loss", "confidence", "entropy", "modified_entropy")
LIRA_ATTACKS = ("lira_online", "lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var")
REFERENCE_ATTACKS = (*LIRA_ATTACKS, "rmia_offline")
RMIA_OFFLINE_A = 0.3  # RMIA's offline interpolation for p(x) from OUT models only (paper: CIFAR)
_MIN_STD = 1e-6


# --------------------------------------------------------------------------- per-record signals


def _log_probs(logits: np.ndarray) -> np.ndarray:
    return np.asarray(log_softmax(np.asarray(logits, dtype=np.float64), axis=1))


def true_class_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The log-softmax probability of each record's true class (minus its cross-entropy loss).

    Args:
        logits: (n, classes) float logits.
        labels: (n,) int true classes, in [0, classes).

    Returns:
        (n,) float64 log-probabilities, <= 0.
    """
    return _log_probs(logits)[np.arange(len(labels)), labels]


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)), computed as z_y - logsumexp(z_j, j != y) so it stays finite
    when p_y rounds to 1 (LiRA's statistic).

    Args:
        logits: (n, classes) float logits, classes >= 2.
        labels: (n,) int true classes, in [0, classes).

    Returns:
        (n,) float64 phi, any real (higher = more confident in the true class).
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    others = z.copy()
    others[rows, labels] = -np.inf
    return np.asarray(z[rows, labels] - logsumexp(others, axis=1))


def signal(name: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A single-model membership signal per record.

    Args:
        name: one of SINGLE_MODEL_SIGNALS: "loss", "confidence", "entropy", "modified_entropy".
        logits: (n, classes) float logits.
        labels: (n,) int true classes, in [0, classes); unused by "confidence" and "entropy".

    Returns:
        (n,) float64, higher = member: log p_y (<= 0) for "loss", the largest softmax
        probability (in (0, 1]) for "confidence", minus the entropy (<= 0) for "entropy", minus
        Mentr (<= 0) for "modified_entropy".

    Raises:
        ValueError: an unknown name.
    """
    log_p = _log_probs(logits)
    p = np.exp(log_p)
    rows = np.arange(len(labels))
    if name == "loss":  # minus the cross-entropy
        return log_p[rows, labels]
    if name == "confidence":
        return p.max(axis=1)
    if name == "entropy":
        return np.asarray((p * log_p).sum(axis=1))  # minus the Shannon entropy
    if name == "modified_entropy":
        # Mentr = -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j); members have low Mentr
        log_1mp = np.log1p(-np.minimum(p, 1 - 1e-12))
        p_y = p[rows, labels]
        rest = p * log_1mp
        rest[rows, labels] = 0.0
        return np.asarray((1 - p_y) * log_p[rows, labels] + rest.sum(axis=1))
    raise ValueError(f"unknown signal {name!r}; choose one of {', '.join(SINGLE_MODEL_SIGNALS)}")


def class_calibrated(
    scores: np.ndarray,
    labels: np.ndarray,
    population_scores: np.ndarray,
    population_labels: np.ndarray,
) -> np.ndarray:
    """The score's percentile among population records (never trained on) of the candidate's
    class: a per-class threshold, so every class has the same false-positive rate (Song & Mittal's
    class-dependent thresholds). Ties count half; classes with fewer than 2 population records
    use all population records. Within one percentile level the raw score breaks ties (a shift
    smaller than one level), so a small population does not flatten the low-FPR end of the ROC
    into one block of ties.

    Args:
        scores: (n,) float, the candidates' raw signal (higher = member).
        labels: (n,) int, the candidates' classes.
        population_scores: (p,) float, the same signal on the population records, p >= 1.
        population_labels: (p,) int, the population records' classes.

    Returns:
        (n,) float64: the percentile in [0, 1] plus a tie-break under half a percentile step
        (higher = member).
    """
    out = np.empty(len(scores), dtype=np.float64)
    raw_rank = np.argsort(np.argsort(scores, kind="stable"), kind="stable") / max(len(scores), 1)
    for c in np.unique(labels):
        pop = np.sort(population_scores[population_labels == c])
        if len(pop) < 2:
            pop = np.sort(population_scores)
        mask = labels == c
        below = np.searchsorted(pop, scores[mask], side="left")
        at_or_below = np.searchsorted(pop, scores[mask], side="right")
        level = 1 / (2 * len(pop))  # the smallest step between percentile values
        out[mask] = (below + at_or_below) * level + 0.5 * level * raw_rank[mask]
    return out


# --------------------------------------------------------------------------- reference models


def assign_halves(n_records: int, n_references: int, rng: np.random.Generator) -> np.ndarray:
    """(n_references, n_records) bool: which records each reference model trains on. Every record
    is IN for exactly n_references // 2 models (Carlini et al.'s balanced assignment), so every
    record has both IN and OUT models when n_references >= 2. With an even number of models they
    come in complementary pairs of exact halves of the pool, so each also trains on exactly half
    of it: as many records as the target when members and non-members are equal in size (with an
    odd number the models' sizes vary around half).

    Args:
        n_records: the records in the pool (a count >= 0).
        n_references: the reference models (a count >= 2).
        rng: draws the assignment (a seeded numpy Generator).

    Returns:
        (n_references, n_records) bool, True where the model trains on the record.

    Raises:
        ValueError: n_references < 2.
    """
    if n_references < 2:
        raise ValueError("reference attacks need at least 2 reference models")
    keep = np.zeros((n_references, n_records), dtype=bool)
    if n_references % 2 == 0:
        for pair in range(n_references // 2):
            keep[2 * pair, rng.permutation(n_records)[: n_records // 2]] = True
            keep[2 * pair + 1] = ~keep[2 * pair]
        return keep
    n_in = n_references // 2
    for i in range(n_records):
        keep[rng.permutation(n_references)[:n_in], i] = True
    return keep


def _gaussian_fit(
    values: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (query, record) mean and std of values (refs, queries, records) over the refs where
    mask (refs, records) is True, and the pooled within-record std per query."""
    m = mask[:, None, :]
    count = mask.sum(axis=0)
    mean = np.where(m, values, 0.0).sum(axis=0) / count
    residual = np.where(m, values - mean, 0.0)
    var = (residual**2).sum(axis=0) / count
    dof = max(int(mask.sum()) - mask.shape[1], 1)
    pooled = np.sqrt((residual**2).sum(axis=(0, 2)) / dof)[:, None]
    return mean, np.sqrt(var), pooled


@dataclass(frozen=True)
class Lira:
    """LiRA's scores, the variants it could not run and why, and how many (query, record)
    standard deviations were zero and floored (never in silence)."""

    scores: dict[str, np.ndarray]
    skipped: dict[str, str]
    floored: dict[str, int]


def lira_scores(
    target_phi: np.ndarray, reference_phi: np.ndarray, reference_in: np.ndarray
) -> Lira:
    """LiRA on logit-scaled confidences. target_phi (queries, records), reference_phi (refs,
    queries, records), reference_in (refs, records); a query axis of 1 (or none) is one query
    per record, more are Carlini et al.'s augmented queries (the same record flipped or shifted),
    whose per-query scores are averaged. Online: log N(phi; in) - log N(phi; out). Offline: the
    one-sided test against OUT models only, as the z-score (phi - mu_out) / sigma_out (monotone
    in the paper's 1 - Pr[Z > phi]). *_fixed_var uses one pooled variance per query, steadier
    with few reference models.

    A variance needs two samples: the online variants run only when every record has at least
    two IN and two OUT references, the offline ones when it has two OUT (with N = 2 a record has
    one of each, the fit's variance is exactly 0, and online LiRA would degenerate into a
    nearest-mean rule with scores near 1e12).

    Args:
        target_phi: (queries, records) or (records,) float, the target's logit-scaled confidence.
        reference_phi: (refs, queries, records) or (refs, records) float, the same for each
            reference model (the query axis present exactly when target_phi has one).
        reference_in: (refs, records) bool, True where the reference model trained on the record.

    Returns:
        Lira: scores (variant name -> (records,) float64, higher = member) for the variants that
        ran, skipped (variant name -> why not), floored (variant name -> standard deviations
        floored at 1e-6).
    """
    target = np.asarray(target_phi, np.float64)
    refs = np.asarray(reference_phi, np.float64)
    if target.ndim == 1:
        target, refs = target[None], refs[:, None]
    n_in = int(reference_in.sum(axis=0).min())
    n_out = int((~reference_in).sum(axis=0).min())
    skipped: dict[str, str] = {}
    floored: dict[str, int] = {}
    scores: dict[str, np.ndarray] = {}
    if n_out < 2:
        reason = f"needs 2 OUT references per record, has {n_out} (use --mia-refs 4 or more)"
        return Lira({}, dict.fromkeys(LIRA_ATTACKS, reason), {})
    mu_out, sd_out, pooled_out = _gaussian_fit(refs, ~reference_in)

    def floor(name: str, sd: np.ndarray) -> np.ndarray:
        zero = sd < _MIN_STD
        if zero.any():
            floored[name] = int(zero.sum())
        return np.maximum(sd, _MIN_STD)

    scores["lira_offline"] = ((target - mu_out) / floor("lira_offline", sd_out)).mean(axis=0)
    scores["lira_offline_fixed_var"] = (
        (target - mu_out) / floor("lira_offline_fixed_var", pooled_out)
    ).mean(axis=0)
    if n_in < 2:
        reason = f"needs 2 IN references per record, has {n_in} (use --mia-refs 4 or more)"
        skipped.update(dict.fromkeys(("lira_online", "lira_online_fixed_var"), reason))
        return Lira(scores, skipped, floored)
    mu_in, sd_in, pooled_in = _gaussian_fit(refs, reference_in)

    def online(name: str, s_in: np.ndarray, s_out: np.ndarray) -> np.ndarray:
        s_in, s_out = floor(name, s_in), floor(name, s_out)
        ratio = norm.logpdf(target, mu_in, s_in) - norm.logpdf(target, mu_out, s_out)
        return np.asarray(ratio.mean(axis=0))

    scores["lira_online"] = online("lira_online", sd_in, sd_out)
    scores["lira_online_fixed_var"] = online("lira_online_fixed_var", pooled_in, pooled_out)
    return Lira(scores, skipped, floored)


def rmia_offline_scores(
    target_p: np.ndarray,
    reference_p: np.ndarray,
    reference_in: np.ndarray,
    target_p_population: np.ndarray,
    reference_p_population: np.ndarray,
    *,
    a: float = RMIA_OFFLINE_A,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA offline. p are true-class probabilities; p(x) is estimated from the OUT models as
    ((1 + a) p_out(x) + (1 - a)) / 2 (population records are OUT for every model). The score of x
    is the share of population records z with [p(x|target)/p(x)] / [p(z|target)/p(z)] > gamma.

    Args:
        target_p: (records,) float, the target's true-class probability per candidate, in [0, 1].
        reference_p: (refs, records) float, each reference model's, in [0, 1].
        reference_in: (refs, records) bool, True where the reference trained on the record; every
            record needs at least one OUT model.
        target_p_population: (pop,) float, the target's on population records, pop >= 1.
        reference_p_population: (refs, pop) float, each reference model's on them.
        a: the offline interpolation, in [0, 1].
        gamma: the likelihood-ratio threshold, > 0.

    Returns:
        (records,) float64, the share of population records z the candidate beats by more than
        gamma, in [0, 1] (higher = member).
    """
    out = ~reference_in
    p_out_x = np.where(out, reference_p, 0.0).sum(axis=0) / out.sum(axis=0)
    p_x = 0.5 * ((1 + a) * p_out_x + (1 - a))
    p_z = 0.5 * ((1 + a) * reference_p_population.mean(axis=0) + (1 - a))
    ratio_x = target_p / p_x
    ratio_z = np.sort(target_p_population / p_z)
    # number of z with ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


# --------------------------------------------------------------------------- one model, all attacks


def _true_class_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.exp(true_class_log_prob(logits, labels))


def _per_reference(
    stat: Callable[[np.ndarray, np.ndarray], np.ndarray], logits: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """stat applied to each reference model's logits: (refs, records)."""
    return np.stack([stat(one, labels) for one in logits])


def model_attack_scores(
    target_logits: np.ndarray,
    labels: np.ndarray,
    population_logits: np.ndarray,
    population_labels: np.ndarray,
    reference_logits: np.ndarray | None = None,
    reference_in: np.ndarray | None = None,
    reference_population_logits: np.ndarray | None = None,
    target_query_logits: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every attack that the given inputs allow, as ({attack name: score per candidate}, notes
    on the reference attacks that did not run or floored a variance).

    target_logits (records, classes) on the candidates; population_* on records no model trained
    on (class calibration, RMIA). reference_logits (refs, queries, records, classes) with
    reference_in (refs, records) and reference_population_logits (refs, population, classes) add
    LiRA/RMIA; target_query_logits (queries, records, classes) are the target's logits on the
    same augmented queries (query 0: the record itself). Without it, one query per record.

    Args:
        target_logits: (records, classes) float, the target model's logits on the candidates.
        labels: (records,) int, the candidates' true classes.
        population_logits: (pop, classes) float, the target's logits on population records.
        population_labels: (pop,) int, their true classes.
        reference_logits: (refs, queries, records, classes) or (refs, records, classes) float;
            None: the single-model signals only.
        reference_in: (refs, records) bool, True where a reference trained on the record; needed
            with reference_logits.
        reference_population_logits: (refs, pop, classes) float; needed with reference_logits.
        target_query_logits: (queries, records, classes) float; None: one query, target_logits.

    Returns:
        (scores, notes): scores maps each attack (every single-model signal, its
        "_class_calibrated" variant and, with references, the LiRA variants that ran and
        "rmia_offline") to (records,) float64 (higher = member); notes maps a LiRA variant to why
        it did not run or how many standard deviations were floored.

    Raises:
        ValueError: reference_logits without reference_in or reference_population_logits, or the
            target's and the references' query counts differ.
    """
    scores: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    for name in SINGLE_MODEL_SIGNALS:
        raw = signal(name, target_logits, labels)
        scores[name] = raw
        scores[f"{name}_class_calibrated"] = class_calibrated(
            raw, labels, signal(name, population_logits, population_labels), population_labels
        )
    if reference_logits is None:
        return scores, notes
    if reference_in is None or reference_population_logits is None:
        raise ValueError("reference attacks need reference_in and reference_population_logits")
    queries = target_logits[None] if target_query_logits is None else target_query_logits
    ref_queries = reference_logits if reference_logits.ndim == 4 else reference_logits[:, None]
    if ref_queries.shape[1] != len(queries):
        raise ValueError("the target and the references need the same augmented queries")
    target_phi = np.stack([logit_scaled_confidence(q, labels) for q in queries])
    phi_refs = np.stack(
        [np.stack([logit_scaled_confidence(q, labels) for q in ref]) for ref in ref_queries]
    )
    lira = lira_scores(target_phi, phi_refs, reference_in)
    scores.update(lira.scores)
    notes.update({name: f"not run: {why}" for name, why in lira.skipped.items()})
    notes.update(
        {
            name: f"{n} zero standard deviation(s) floored at {_MIN_STD:g}"
            for name, n in lira.floored.items()
        }
    )
    scores["rmia_offline"] = rmia_offline_scores(
        _true_class_prob(queries[0], labels),
        _per_reference(_true_class_prob, ref_queries[:, 0], labels),
        reference_in,
        _true_class_prob(population_logits, population_labels),
        _per_reference(_true_class_prob, reference_population_logits, population_labels),
    )
    return scores, notes
