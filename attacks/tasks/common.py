"""What every membership attack stage shares: the metrics summary and the worst-case choice."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.metrics import AttackMetrics, evaluate_attack, select_strongest, selection_halves
from attacks.references import AttackRecords
from audit.core.columns import LESS_LEAKAGE, MIA, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.seeding import numpy_rng
from audit.engine.context import TaskContext

log = logging.getLogger(__name__)

# each membership family's columns ({family}: mia_release, mia_model) and their max
FAMILY_COLUMNS: tuple[Column, ...] = (
    Column(
        "{family}_attack",
        "the family's strongest attack, chosen by AUC on a random half of the candidates "
        "(mia_release: on the images; mia_model: on the model retrained on them)",
        "text",
        NEUTRAL,
        MIA,
    ),
    Column(
        "{family}_auc",
        "that attack's AUC on the other half; 0.5 is chance",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_auc_ci_low", "95% bootstrap lower bound of the AUC", "[0, 1]", MORE_LEAKAGE, MIA
    ),
    Column(
        "{family}_auc_ci_high", "95% bootstrap upper bound of the AUC", "[0, 1]", MORE_LEAKAGE, MIA
    ),
    Column(
        "{family}_p",
        "p-value that the attack beats chance (the smaller of a Mann-Whitney and a threshold "
        "test, doubled)",
        "(0, 1]",
        LESS_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_tpr_at_1fpr",
        "true-positive rate at 1% false-positive rate; empty where the non-members cannot "
        "resolve 1%",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_tpr_at_0_1fpr",
        "true-positive rate at 0.1% false-positive rate; empty where the non-members cannot "
        "resolve 0.1% (fewer than 1,000 of them)",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_eps_lower",
        "epsilon the attack's error rates imply at eps_delta (one-sided Clopper-Pearson TPR and "
        "FPR bounds, the best threshold chosen on the same scores): an audit estimate, not a "
        "bound with a stated confidence",
        ">= 0",
        MORE_LEAKAGE,
        MIA,
    ),
    Column("eps_lower", "the largest {family}_eps_lower", ">= 0", MORE_LEAKAGE, MIA),
)


def metrics_summary(m: AttackMetrics) -> dict[str, Any]:
    """One attack's metrics as the stage's summary file reports them (JSON-able, no ROC).

    Args:
        m: the attack's metrics (evaluate_attack), on at least one non-member.

    Returns:
        Keys "auc" in [0, 1], "auc_ci" [low, high], "p_value" in [0, 1], "tpr_at_0_1fpr" and
        "tpr_at_1fpr" in [0, 1] (None where the non-members cannot resolve that FPR),
        "min_resolvable_fpr" (1 / n_nonmembers), "balanced_accuracy", "eps_lower" >= 0,
        "eps_delta", "n_members", "n_nonmembers".
    """
    return {
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "p_value": m.p_value,
        "tpr_at_0_1fpr": m.tpr_at_fpr[0.001],
        "tpr_at_1fpr": m.tpr_at_fpr[0.01],
        "min_resolvable_fpr": 1 / m.n_nonmembers,
        "balanced_accuracy": m.balanced_accuracy,
        "eps_lower": m.eps_lower,
        "eps_delta": m.eps_delta,
        "n_members": m.n_members,
        "n_nonmembers": m.n_nonmembers,
    }


def evaluate_all(
    ctx: TaskContext,
    family: str,
    row: str,
    scores: dict[str, np.ndarray],
    is_member: np.ndarray,
    *,
    diagnostics: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Metrics of every attack on one row (all candidates), and the row's worst-case columns for
    the family: the attack chosen on one half of the candidates, measured on the other half.
    diagnostics: attacks reported beside the others but outside the worst case (and the gate).

    Args:
        ctx: the task's context (config, data, run directory).
        family: the membership family ("mia_release" or "mia_model"): names the columns and
            the random streams.
        row: the attacked row ("target", "bn_match-k200"...).
        scores: attack name -> (n_candidates,) float, finite scores of every candidate
            (higher = member), aligned with is_member.
        is_member: (n_candidates,) bool, True for the members.
        diagnostics: names in scores to report but never choose as the strongest.

    Returns:
        report: attack -> metrics_summary on all candidates; selection: the chosen attack,
        every eligible attack's "selection_auc", metrics_summary on the evaluation half,
        "p_value_auc", "threshold", "p_value_threshold" and the gate's "p_value" in [0, 1];
        columns: the row's {family}_* columns of FAMILY_COLUMNS (all but eps_lower), by name.

    Raises:
        ValueError: every attack is a diagnostic, or (evaluate_attack) a half lacks members or
            non-members, or a score is not finite.
    """
    c = ctx.config
    metrics = {
        attack: evaluate_attack(
            s[is_member],
            s[~is_member],
            rng=numpy_rng(c.seed, family, "bootstrap", row, attack),
            delta=c.eps_delta,
        )
        for attack, s in scores.items()
    }
    eligible = {a: s for a, s in scores.items() if a not in diagnostics}
    select = selection_halves(is_member, numpy_rng(c.seed, "mia", "selection"))
    chosen = select_strongest(
        eligible,
        is_member,
        select,
        rng=numpy_rng(c.seed, family, "bootstrap-selected", row),
        delta=c.eps_delta,
    )
    m = chosen.metrics
    columns = {
        f"{family}_attack": chosen.attack,
        f"{family}_auc": m.auc,
        f"{family}_auc_ci_low": m.auc_ci[0],
        f"{family}_auc_ci_high": m.auc_ci[1],
        f"{family}_p": chosen.p_value,
        f"{family}_tpr_at_1fpr": m.tpr_at_fpr[0.01],
        f"{family}_tpr_at_0_1fpr": m.tpr_at_fpr[0.001],
        f"{family}_eps_lower": m.eps_lower,
    }
    log.info(
        "[%s] %s: AUC %s; strongest on the selection half: %s, AUC %.3f (95%% CI %.3f-%.3f, "
        "p %.2g) on the other half",
        family,
        row,
        ", ".join(f"{a} {m.auc:.3f}" for a, m in metrics.items()),
        chosen.attack,
        m.auc,
        m.auc_ci[0],
        m.auc_ci[1],
        chosen.p_value,
    )
    report = {a: metrics_summary(m) for a, m in metrics.items()}
    selection = {
        "attack": chosen.attack,
        "selection_auc": chosen.selection_auc,
        **metrics_summary(m),
        "p_value_auc": m.p_value,
        "threshold": chosen.threshold,
        "p_value_threshold": chosen.p_threshold,
        "p_value": chosen.p_value,  # the gate's: 2 x min of the two tests
    }
    return report, selection, columns


def candidates_of(records: AttackRecords) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices of the candidates and whether each is a member.

    Args:
        records: the attack records (attacks/tasks/records.py attack_records).

    Returns:
        (n_candidates,) int64 dataset indices, and (n_candidates,) bool, True for members.
    """
    return records.pool[records.candidates], records.pool_is_member[records.candidates]


def candidate_counts(is_member: np.ndarray) -> dict[str, int]:
    """How many members and non-members the attacks scored, for the summary file.

    Args:
        is_member: (n_candidates,) bool, True for the members.

    Returns:
        {"n_members": count >= 0, "n_nonmembers": count >= 0}.
    """
    return {"n_members": int(is_member.sum()), "n_nonmembers": int((~is_member).sum())}
