"""Membership inference on each release: GAN-Leaks full black-box, with what a release attacker
could hold: pixels, SSIM, HaarPSI and distances in the population model's features (trained on
records no audited pipeline saw, or the user's --attacker-weights). With reference pipelines also
the calibrated variants: the score minus the mean score against the reference synthetic sets of
the reference models that did not train on the candidate. The same distance in the private
target's features is kept as a labelled insider diagnostic, outside the worst case."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from attacks.references import AttackRecords
from attacks.release import nearest_l2, penultimate_features, release_scores
from attacks.tasks.common import FAMILY_COLUMNS, candidate_counts, candidates_of, evaluate_all
from attacks.tasks.records import attack_records
from audit.core import layout
from audit.core.columns import MIA, MORE_LEAKAGE, Column
from audit.core.transforms import augmentations
from audit.engine.context import TaskContext
from audit.engine.costs import scaled
from audit.engine.spec import ATTACK, CANDIDATES, Plan, Stage, Task

INSIDER = "target_feature_l2"  # a diagnostic: needs the private target, which no attacker holds

# the release family's own column beside FAMILY_COLUMNS
COLUMNS: tuple[Column, ...] = (
    Column(
        "mia_release_target_feature_l2_auc",
        "AUC of an insider diagnostic (distance in the target's own features), outside the "
        "worst case and the gate",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
)

# seconds one row costs on the reference CPU at 16x16 px (audit/engine/costs.py)
ROW_S = 1.7


def mia_release_tasks(plan: Plan) -> list[Task]:
    """One membership-attack task per planned release.

    Args:
        plan: the run's plan (config, planned releases, data size for the cost estimate).

    Returns:
        The tasks, named by row, each reading the release's images and the population model;
        cost: ROW_S seconds scaled to the data's pixel count.
    """
    return [
        Task(
            "mia_release",
            r.row,
            attack_release,
            (r.path, r.row),
            reads=(r.path, layout.POPULATION_MODEL),
            cost=scaled(plan, ROW_S),
        )
        for r in plan.releases
    ]


def attack_release(ctx: TaskContext, path: str, name: str) -> tuple[Any, Any, Any]:
    """(every attack's metrics, the selected attack, the row's columns) for one release.

    Scores every candidate against the release (and, where reference pipelines cover the row,
    the calibrated variants); writes the scores to layout.mia_scores("mia_release", name).

    Args:
        ctx: the task's context (config, data, run directory).
        path: the release's .npz in the run directory (layout.synthetic), with "images"
            (N, H, W, C) uint8.
        name: the release's row ("bn_match-k200", "dp_vae-eps10"...).

    Returns:
        evaluate_all's report (attack -> metrics summary, the insider diagnostic included) and
        selection (the chosen attack's figures on the evaluation half, the insider never
        chosen), and the row's mia_release_* columns, with mia_release_target_feature_l2_auc.

    Raises:
        ValueError: (evaluate_all) a half of the candidates lacks members or non-members, or a
            score is not finite.
    """
    c, data = ctx.config, ctx.data
    records = attack_records(ctx)
    chosen, is_member = candidates_of(records)
    candidates = data.images[chosen]
    extractor, target = ctx.saved_model(layout.POPULATION_MODEL), ctx.target()

    @cache
    def candidate_features(insider: bool = False) -> Any:
        return penultimate_features(target if insider else extractor, candidates, device=c.device)

    def scores_against(synthetic: np.ndarray) -> dict[str, np.ndarray]:
        return release_scores(
            candidates,
            synthetic,
            candidate_features=candidate_features(),
            synthetic_features=penultimate_features(extractor, synthetic, device=c.device),
            device=c.device,
            transforms=augmentations(max_shift=c.nn_shift, mirror=bool(c.nn_mirror)),
        )

    refs_info = ctx.store.read_json(layout.REFS)
    synthetic = ctx.store.read_npz(path)["images"]
    scores = scores_against(synthetic)
    if refs_info["n_references"] and name in refs_info["rows"]:
        scores.update(
            _calibrated(ctx, name, refs_info["n_references"], records, scores, scores_against)
        )
    scores[INSIDER] = -nearest_l2(
        candidate_features(True), penultimate_features(target, synthetic, device=c.device)
    )
    ctx.store.write_npz(
        layout.mia_scores("mia_release", name),
        candidates=chosen,
        is_member=is_member,
        **{f"score_{d}": s for d, s in scores.items()},
    )
    report, selected, columns = evaluate_all(
        ctx, "mia_release", name, scores, is_member, diagnostics=(INSIDER,)
    )
    columns[f"mia_release_{INSIDER}_auc"] = report[INSIDER]["auc"]
    return report, selected, columns


def write_mia_release(ctx: TaskContext, results: dict[str, Any]) -> None:
    """The stage's combine step: write mia_release.json and the mia_release columns.

    Args:
        ctx: the task's context (config, data, run directory).
        results: row -> what attack_release returned, as read back from JSON: [report,
            selection, columns].
    """
    _, is_member = candidates_of(attack_records(ctx))
    ctx.store.write_json(
        layout.summary("mia_release"),
        {
            "attacks": {name: r[0] for name, r in results.items()},
            "selected": {name: r[1] for name, r in results.items()},
            "diagnostics": [INSIDER],
            "feature_extractor": ctx.store.read_json(layout.POPULATION_SUMMARY)["source"],
            **candidate_counts(is_member),
        },
    )
    ctx.store.write_json(
        layout.stage_columns("mia_release"), {name: r[2] for name, r in results.items()}
    )


def _calibrated(
    ctx: TaskContext,
    row: str,
    n_refs: int,
    records: AttackRecords,
    scores: dict[str, np.ndarray],
    scores_against: Any,
) -> dict[str, np.ndarray]:
    out_sum = {d: np.zeros(len(records.candidates)) for d in scores}
    out_count = np.zeros(len(records.candidates))
    for i in range(n_refs):
        ref = ctx.store.read_npz(layout.reference(i))
        is_out = ~ref["keep"][records.candidates]
        ref_scores = scores_against(ref[f"images_{row}"])
        for d in scores:
            out_sum[d] += np.where(is_out, ref_scores[d], 0.0)
        out_count += is_out
    return {f"{d}_calibrated": scores[d] - out_sum[d] / out_count for d in scores}


STAGE = Stage(
    "mia_release",
    config=(*ATTACK, *CANDIDATES, "eps_delta", "nn_shift", "nn_mirror"),
    reads=("split", "target", "generate", "mia_refs", "population_model"),
    row_reads=("generate",),
    tasks=mia_release_tasks,
    combine=write_mia_release,
    columns=(*FAMILY_COLUMNS, *COLUMNS),
)
