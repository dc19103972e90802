"""Membership inference on classifiers: the target (what releasing the model itself would leak)
and each release's retrained model. Reference attacks (LiRA, RMIA) run where reference pipelines
cover the row; the single-model attacks, raw and class-calibrated, run everywhere."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.membership import REFERENCE_ATTACKS, model_attack_scores
from attacks.tasks.common import FAMILY_COLUMNS, candidate_counts, candidates_of, evaluate_all
from attacks.tasks.records import attack_records, load_references, query_logits
from audit.core import layout
from audit.core.training import predict_logits
from audit.engine.context import TaskContext
from audit.engine.costs import scaled
from audit.engine.spec import ATTACK, CANDIDATES, Plan, Stage, Task

log = logging.getLogger(__name__)

# seconds one row costs on the reference CPU at 16x16 px (audit/engine/costs.py)
ROW_S = 2.6


def mia_model_tasks(plan: Plan) -> list[Task]:
    """One membership-attack task per attacked classifier (the target and each retrained model).

    Args:
        plan: the run's plan (config, planned releases, data size for the cost estimate).

    Returns:
        The tasks, named by row, each reading that model's weights; cost: ROW_S seconds scaled
        to the data's pixel count.
    """
    return [
        Task(
            "mia_model",
            row,
            attack_model,
            (row, path),
            reads=(path,),
            cost=scaled(plan, ROW_S),
        )
        for row, path in plan.attacked_models().items()
    ]


def attack_model(ctx: TaskContext, row: str, path: str) -> tuple[Any, ...]:
    """(attacks run, reference notes, every attack's metrics, the selected attack, columns).

    Writes every candidate's score per attack to layout.mia_scores("mia_model", row).

    Args:
        ctx: the task's context (config, data, run directory).
        row: the attacked model's row ("target", "bn_match-k200"...).
        path: its saved weights in the run directory (layout.TARGET or layout.model(row)).

    Returns:
        A 5-tuple: the names of the attacks that ran (list of str); notes, LiRA variant -> why
        it did not run or how many standard deviations were floored; then evaluate_all's
        report (attack -> metrics summary), selection (the chosen attack's figures on the
        evaluation half) and the row's mia_model_* columns.

    Raises:
        ValueError: (model_attack_scores) the target's and the references' query counts
            differ; (evaluate_all) a half of the candidates lacks members or non-members.
    """
    c, data = ctx.config, ctx.data
    records = attack_records(ctx)
    chosen, is_member = candidates_of(records)
    labels, population_labels = data.labels[chosen], data.labels[records.population]
    model = ctx.saved_model(path)
    logits = predict_logits(model, data.images[chosen], device=c.device).numpy()
    population = predict_logits(model, data.images[records.population], device=c.device)
    references = load_references(ctx, row)
    reference_inputs: dict[str, np.ndarray] = {}
    if references is not None:
        keep, ref_logits, ref_population = references
        reference_inputs = {
            "reference_in": keep[:, records.candidates],
            "reference_logits": ref_logits[:, :, records.candidates],
            "reference_population_logits": ref_population,
            "target_query_logits": query_logits(ctx, model, data.images[chosen]),
        }
    scores, notes = model_attack_scores(
        logits, labels, population.numpy(), population_labels, **reference_inputs
    )
    for attack, note in notes.items():
        log.warning("[mia_model] %s: %s %s", row, attack, note)
    ctx.store.write_npz(
        layout.mia_scores("mia_model", row),
        candidates=chosen,
        is_member=is_member,
        **{f"score_{a}": s for a, s in scores.items()},
    )
    return (list(scores), notes, *evaluate_all(ctx, "mia_model", row, scores, is_member))


def write_mia_model(ctx: TaskContext, results: dict[str, Any]) -> None:
    """The stage's combine step: write mia_model.json and the mia_model columns.

    Args:
        ctx: the task's context (config, data, run directory).
        results: row -> what attack_model returned, as read back from JSON (a 5-item list).
    """
    c = ctx.config
    records = attack_records(ctx)
    _, is_member = candidates_of(records)
    refs_info = ctx.store.read_json(layout.REFS)
    n_refs = refs_info["n_references"]
    ctx.store.write_json(
        layout.summary("mia_model"),
        {
            "attacks": {row: r[2] for row, r in results.items()},
            "selected": {row: r[3] for row, r in results.items()},
            "attacks_run": {row: r[0] for row, r in results.items()},
            "n_references": n_refs,
            "reference_notes": {row: r[1] for row, r in results.items() if r[1]},
            "note": (
                f"LiRA and RMIA ran with {n_refs} reference pipelines"
                + (
                    " (the online LiRA variants need 2 IN and 2 OUT references per record, "
                    "so --mia-refs 4 or more; they did not run here)"
                    if n_refs < 4
                    else ""
                )
                + (
                    ", with augmented queries (shifted and mirrored copies)"
                    if c.mia_augment
                    else ""
                )
                + (f". {refs_info['size_note']}" if refs_info.get("size_note") else "")
                if n_refs
                else "no reference models (--mia-refs 0): only the single-model attacks ran, "
                "raw and class-calibrated against population records; LiRA and RMIA ("
                + ", ".join(REFERENCE_ATTACKS)
                + ") need --mia-refs N"
            ),
            **candidate_counts(is_member),
            "n_population": len(records.population),
        },
    )
    ctx.store.write_json(
        layout.stage_columns("mia_model"), {row: r[4] for row, r in results.items()}
    )


STAGE = Stage(
    "mia_model",
    config=(*ATTACK, *CANDIDATES, "eps_delta"),
    reads=("split", "target", "generate", "utility", "mia_refs"),
    row_reads=("generate", "utility"),
    tasks=mia_model_tasks,
    combine=write_mia_model,
    columns=FAMILY_COLUMNS,
)
