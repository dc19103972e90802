"""Attack stages, registered into audit.pipeline's stage list (imported by the pipeline):
mia_refs (reference pipelines, only with --mia-refs), mia_release (the release itself) and
mia_model (the target and each retrained model)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.membership import REFERENCE_ATTACKS, model_attack_scores
from attacks.metrics import AttackMetrics, evaluate_attack
from attacks.references import (
    TARGET_ROW,
    AttackRecords,
    attack_records,
    load_references,
    stage_mia_refs,
)
from attacks.release import penultimate_features, release_scores
from audit.pipeline import Run, Stage, register_stage
from audit.seeding import numpy_rng
from audit.store import row_name
from audit.training import predict_logits

log = logging.getLogger(__name__)


def metrics_summary(m: AttackMetrics) -> dict[str, Any]:
    return {
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "tpr_at_0.1%fpr": m.tpr_at_fpr[0.001],
        "tpr_at_1%fpr": m.tpr_at_fpr[0.01],
        "balanced_accuracy": m.balanced_accuracy,
        "eps_lower": m.eps_lower,
        "n_members": m.n_members,
        "n_nonmembers": m.n_nonmembers,
    }


def _evaluate_all(
    run: Run, family: str, row: str, scores: dict[str, np.ndarray], is_member: np.ndarray
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Metrics of every attack on one row, and the row's worst-case columns for the family."""
    metrics = {
        attack: evaluate_attack(
            s[is_member],
            s[~is_member],
            rng=numpy_rng(run.config.seed, family, "bootstrap", row, attack),
        )
        for attack, s in scores.items()
    }
    columns = {  # the worst case over the family's attacks
        f"{family}_auc": max(m.auc for m in metrics.values()),
        f"{family}_tpr_at_1fpr": max(m.tpr_at_fpr[0.01] for m in metrics.values()),
        f"{family}_eps_lower": max(m.eps_lower for m in metrics.values()),
    }
    log.info(
        "[%s] %s: AUC %s",
        family,
        row,
        ", ".join(f"{a} {m.auc:.3f}" for a, m in metrics.items()),
    )
    return {a: metrics_summary(m) for a, m in metrics.items()}, columns


def _candidates(records: AttackRecords) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices of the candidates and whether each is a member."""
    return records.pool[records.candidates], records.pool_is_member[records.candidates]


def stage_mia_release(run: Run) -> None:
    """GAN-Leaks full black-box on each release; with reference pipelines also the calibrated
    variant: the score minus the mean score against the reference synthetic sets of the
    reference models that did not train on the candidate."""
    c, data = run.config, run.data
    records = attack_records(run)
    chosen, is_member = _candidates(records)
    candidates = data.images[chosen]
    teacher = run.target()
    candidate_features = penultimate_features(teacher, candidates, device=c.device)

    def scores_against(synthetic: np.ndarray) -> dict[str, np.ndarray]:
        return release_scores(
            candidates,
            synthetic,
            candidate_features=candidate_features,
            synthetic_features=penultimate_features(teacher, synthetic, device=c.device),
            device=c.device,
        )

    refs_info = run.store.read_json("refs.json")
    report: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    for release in run.releases():
        name = row_name(release["generator"], release["k"])
        scores = scores_against(run.store.read_npz(release["path"])["images"])
        if refs_info["n_references"] and name in refs_info["rows"]:
            scores.update(
                _calibrated(run, name, refs_info["n_references"], records, scores, scores_against)
            )
        report[name], columns[name] = _evaluate_all(run, "mia_release", name, scores, is_member)
        run.store.write_npz(
            f"mia/release-{name}.npz",
            candidates=chosen,
            is_member=is_member,
            **{f"score_{d}": s for d, s in scores.items()},
        )
    run.store.write_json(
        "mia_release.json",
        {"attacks": report, "n_candidates_each": int(is_member.sum())},
    )
    run.store.write_json("columns/mia_release.json", columns)


def _calibrated(
    run: Run,
    row: str,
    n_refs: int,
    records: AttackRecords,
    scores: dict[str, np.ndarray],
    scores_against: Any,
) -> dict[str, np.ndarray]:
    out_sum = {d: np.zeros(len(records.candidates)) for d in scores}
    out_count = np.zeros(len(records.candidates))
    for i in range(n_refs):
        ref = run.store.read_npz(f"refs/ref{i}.npz")
        is_out = ~ref["keep"][records.candidates]
        ref_scores = scores_against(ref[f"images_{row}"])
        for d in scores:
            out_sum[d] += np.where(is_out, ref_scores[d], 0.0)
        out_count += is_out
    return {f"{d}_calibrated": scores[d] - out_sum[d] / out_count for d in scores}


def stage_mia_model(run: Run) -> None:
    """Classifier attacks on the target (what releasing the model itself would leak) and on each
    release's retrained model. Reference attacks (LiRA, RMIA) run where reference pipelines cover
    the row; the single-model attacks, raw and class-calibrated, run everywhere."""
    c, data = run.config, run.data
    records = attack_records(run)
    chosen, is_member = _candidates(records)
    labels, population_labels = data.labels[chosen], data.labels[records.population]
    models = {TARGET_ROW: "target.pt"} | {
        row_name(r["generator"], r["k"]): f"models/{row_name(r['generator'], r['k'])}.pt"
        for r in run.releases()
    }
    report: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    ran: dict[str, list[str]] = {}
    for row, path in models.items():
        model = run.saved_model(path)
        logits = predict_logits(model, data.images[chosen], device=c.device).numpy()
        population = predict_logits(model, data.images[records.population], device=c.device)
        references = load_references(run, row)
        reference_inputs: dict[str, np.ndarray] = {}
        if references is not None:
            keep, ref_logits, ref_population = references
            reference_inputs = {
                "reference_in": keep[:, records.candidates],
                "reference_logits": ref_logits[:, records.candidates],
                "reference_population_logits": ref_population,
            }
        scores = model_attack_scores(
            logits, labels, population.numpy(), population_labels, **reference_inputs
        )
        ran[row] = list(scores)
        report[row], columns[row] = _evaluate_all(run, "mia_model", row, scores, is_member)
        run.store.write_npz(
            f"mia/model-{row}.npz",
            candidates=chosen,
            is_member=is_member,
            **{f"score_{a}": s for a, s in scores.items()},
        )
    n_refs = run.store.read_json("refs.json")["n_references"]
    run.store.write_json(
        "mia_model.json",
        {
            "attacks": report,
            "attacks_run": ran,
            "n_references": n_refs,
            "note": (
                f"LiRA and RMIA ran with {n_refs} reference pipelines"
                if n_refs
                else "no reference models (--mia-refs 0): only the single-model attacks ran, "
                "raw and class-calibrated against population records; LiRA and RMIA ("
                + ", ".join(REFERENCE_ATTACKS)
                + ") need --mia-refs N"
            ),
            "n_candidates_each": int(is_member.sum()),
            "n_population": len(records.population),
        },
    )
    run.store.write_json("columns/mia_model.json", columns)


_REGISTERED = False


def register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        register_stage(Stage("mia_refs", stage_mia_refs))
        register_stage(Stage("mia_release", stage_mia_release))
        register_stage(Stage("mia_model", stage_mia_model))
        _REGISTERED = True


register()
