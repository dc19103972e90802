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

import numpy as np
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm

SINGLE_MODEL_SIGNALS = ("loss", "confidence", "entropy", "modified_entropy")
REFERENCE_ATTACKS = (
    "lira_online",
    "lira_online_fixed_var",
    "lira_offline",
    "lira_offline_fixed_var",
    "rmia_offline",
)
RMIA_OFFLINE_A = 0.3  # RMIA's offline interpolation for p(x) from OUT models only (paper: CIFAR)
_MIN_STD = 1e-6


# --------------------------------------------------------------------------- per-record signals


def _log_probs(logits: np.ndarray) -> np.ndarray:
    return np.asarray(log_softmax(np.asarray(logits, dtype=np.float64), axis=1))


def true_class_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _log_probs(logits)[np.arange(len(labels)), labels]


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)), computed as z_y - logsumexp(z_j, j != y) so it stays finite
    when p_y rounds to 1 (LiRA's statistic)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    others = z.copy()
    others[rows, labels] = -np.inf
    return np.asarray(z[rows, labels] - logsumexp(others, axis=1))


def signal(name: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A single-model membership signal per record."""
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
    into one block of ties."""
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
    record has both IN and OUT models when n_references >= 2."""
    if n_references < 2:
        raise ValueError("reference attacks need at least 2 reference models")
    n_in = n_references // 2
    keep = np.zeros((n_references, n_records), dtype=bool)
    for i in range(n_records):
        keep[rng.permutation(n_references)[:n_in], i] = True
    return keep


def _gaussian_fit(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-record mean and std of values (refs x records) over the refs where mask is True, and
    the pooled within-record std (the fixed-variance estimate)."""
    count = mask.sum(axis=0)
    if (count == 0).any():
        raise ValueError("every candidate needs at least one reference model of each kind")
    mean = np.where(mask, values, 0.0).sum(axis=0) / count
    residual = np.where(mask, values - mean, 0.0)
    var = (residual**2).sum(axis=0) / count
    pooled = float(np.sqrt((residual**2).sum() / max(mask.sum() - mask.shape[1], 1)))
    return mean, np.sqrt(var), max(pooled, _MIN_STD)


def lira_scores(
    target_phi: np.ndarray, reference_phi: np.ndarray, reference_in: np.ndarray
) -> dict[str, np.ndarray]:
    """LiRA on logit-scaled confidences. target_phi (records,), reference_phi and reference_in
    (refs, records). Online: log N(phi; in) - log N(phi; out). Offline: the one-sided test
    against OUT models only, as the z-score (phi - mu_out) / sigma_out (monotone in the paper's
    1 - Pr[Z > phi]). *_fixed_var uses one pooled variance for all records, which is more stable
    with few reference models."""
    mu_in, sd_in, pooled_in = _gaussian_fit(reference_phi, reference_in)
    mu_out, sd_out, pooled_out = _gaussian_fit(reference_phi, ~reference_in)
    sd_in, sd_out = np.maximum(sd_in, _MIN_STD), np.maximum(sd_out, _MIN_STD)

    def online(s_in: np.ndarray | float, s_out: np.ndarray | float) -> np.ndarray:
        return np.asarray(
            norm.logpdf(target_phi, mu_in, s_in) - norm.logpdf(target_phi, mu_out, s_out)
        )

    return {
        "lira_online": online(sd_in, sd_out),
        "lira_online_fixed_var": online(pooled_in, pooled_out),
        "lira_offline": (target_phi - mu_out) / sd_out,
        "lira_offline_fixed_var": (target_phi - mu_out) / pooled_out,
    }


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
    is the share of population records z with [p(x|target)/p(x)] / [p(z|target)/p(z)] > gamma."""
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
) -> dict[str, np.ndarray]:
    """Every attack that the given inputs allow, as {attack name: score per candidate}.

    target_logits (records, classes) on the candidates; population_* on records no model trained
    on (class calibration, RMIA). reference_logits (refs, records, classes) with reference_in
    (refs, records) and reference_population_logits (refs, population, classes) add LiRA/RMIA."""
    scores: dict[str, np.ndarray] = {}
    for name in SINGLE_MODEL_SIGNALS:
        raw = signal(name, target_logits, labels)
        scores[name] = raw
        scores[f"{name}_class_calibrated"] = class_calibrated(
            raw, labels, signal(name, population_logits, population_labels), population_labels
        )
    if reference_logits is None:
        return scores
    if reference_in is None or reference_population_logits is None:
        raise ValueError("reference attacks need reference_in and reference_population_logits")
    target_phi = logit_scaled_confidence(target_logits, labels)
    phi_refs = _per_reference(logit_scaled_confidence, reference_logits, labels)
    scores.update(lira_scores(target_phi, phi_refs, reference_in))
    scores["rmia_offline"] = rmia_offline_scores(
        _true_class_prob(target_logits, labels),
        _per_reference(_true_class_prob, reference_logits, labels),
        reference_in,
        _true_class_prob(population_logits, population_labels),
        _per_reference(_true_class_prob, reference_population_logits, population_labels),
    )
    return scores
