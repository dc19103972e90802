"""Reference pipelines for LiRA/RMIA (`--mia-refs N`), one task each.

Reference i repeats the audited pipeline on its half of the members + non-members pool: a
reference target with the target's recipe, every generator trained or run from it with the same
settings, one retrained model per release with the utility recipe. It saves what the attacks need
to refs/ref<i>.npz (attacks/references.py reads it back).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from attacks.membership import assign_halves
from attacks.references import AttackRecords, reference_size_note
from attacks.tasks.records import attack_records, query_logits, reference_rows
from audit.core import layout
from audit.core.layout import row_name, row_of
from audit.core.models import NormalizedClassifier
from audit.core.seeding import derive_seed, numpy_rng
from audit.core.training import predict_logits, train_classifier
from audit.engine.context import TaskContext, generation_request, new_classifier, retrain_on
from audit.engine.costs import reference_cost
from audit.engine.spec import ATTACK, CANDIDATES, TARGET_ROW, Plan, Stage, Task
from generators.registry import plugin

log = logging.getLogger(__name__)


def refs_tasks(plan: Plan) -> list[Task]:
    """One task per reference pipeline (`mia_refs` of them; none when it is 0).

    Args:
        plan: the run's plan (config, planned releases, data size for the cost estimate).

    Returns:
        The tasks "ref0" .. "ref<mia_refs - 1>", each running reference_pipeline(ctx, i) at
        reference_cost's estimate.
    """
    cost = reference_cost(plan)
    return [
        Task("mia_refs", f"ref{i}", reference_pipeline, (i,), cost=cost)
        for i in range(plan.config.mia_refs)
    ]


def reference_halves(ctx: TaskContext, records: AttackRecords) -> np.ndarray:
    """(references, pool) IN mask: every pool record is IN for exactly half the references.

    Args:
        ctx: the task's context (config, data, run directory).
        records: the attack records (their pool's size is used).

    Returns:
        (mia_refs, pool) bool, True where reference i trains on the pool record (each record
        IN for mia_refs // 2 references; seeded, the same in every task).

    Raises:
        ValueError: mia_refs < 2.
    """
    c = ctx.config
    return assign_halves(
        len(records.pool), c.mia_refs, numpy_rng(c.seed, "mia", "reference-halves")
    )


def reference_pipeline(ctx: TaskContext, i: int) -> None:
    """Reference i: its target, every generator's sets and a retrained model per release.

    Writes refs/ref<i>.npz: "keep" (its IN mask of the pool), and per row "logits_<row>"
    (every query view of the pool) and "population_logits_<row>"; per reproduced release also
    "images_<row>" and "labels_<row>".

    Args:
        ctx: the task's context (config, data, run directory).
        i: the reference's index, in [0, mia_refs).
    """
    c, data = ctx.config, ctx.data
    start = time.perf_counter()
    records = attack_records(ctx)
    keep = reference_halves(ctx, records)[i]
    rows = reference_rows(ctx)
    train_idx = records.pool[keep]
    model = new_classifier(ctx.config, ctx.data, f"reference-{i}-target")
    train_classifier(
        model,
        data.images[train_idx],
        data.labels[train_idx],
        c.target,
        seed=c.seed,
        stream=f"reference-{i}-target",
        device=c.device,
        desc=f"reference {i} target",
    )
    arrays: dict[str, np.ndarray] = {"keep": keep}
    arrays.update(_logits(ctx, model, TARGET_ROW, records))
    for name in sorted({r["generator"] for r in rows}):
        request = generation_request(
            ctx.config,
            ctx.data,
            model,
            data.images[train_idx],
            data.labels[train_idx],
            seed=derive_seed(c.seed, "reference", i),
        )
        declared = plugin(name)
        for key, synthetic in declared.build(c).generate(request).items():
            row = row_name(name, *declared.setting(key))
            arrays[f"images_{row}"] = synthetic.images
            arrays[f"labels_{row}"] = synthetic.labels
            retrained = retrain_on(
                ctx.config, ctx.data, synthetic.images, synthetic.labels, f"reference-{i}-{row}"
            )
            arrays.update(_logits(ctx, retrained, row, records))
    ctx.store.write_npz(layout.reference(i), **arrays)
    seconds = round(time.perf_counter() - start, 3)
    ctx.record_time(f"mia_refs.ref{i}", seconds)  # config.json: results stay deterministic
    log.info("[mia_refs] reference %d/%d done in %.1f s", i + 1, c.mia_refs, seconds)


def write_refs(ctx: TaskContext, results: dict[str, Any]) -> None:
    """refs.json: how many references ran and which rows they cover.

    Args:
        ctx: the task's context (config, data, run directory).
        results: the reference tasks' results, by task name (unused: each returns None).
    """
    n = ctx.config.mia_refs
    if n == 0:
        ctx.store.write_json(layout.REFS, {"n_references": 0})
        return
    records = attack_records(ctx)
    n_members = int(records.pool_is_member.sum())
    size_note = reference_size_note(n_members, len(records.pool) - n_members)
    if size_note:
        log.warning("[mia_refs] %s", size_note)
    ctx.store.write_json(
        layout.REFS,
        {
            "n_references": n,
            "rows": [TARGET_ROW, *(row_of(r) for r in reference_rows(ctx))],
            "pool_size": len(records.pool),
            "size_note": size_note,
        },
    )


def _logits(
    ctx: TaskContext, model: NormalizedClassifier, row: str, records: AttackRecords
) -> dict[str, np.ndarray]:
    device = ctx.config.device
    return {
        f"logits_{row}": query_logits(ctx, model, ctx.data.images[records.pool]),
        f"population_logits_{row}": predict_logits(
            model, ctx.data.images[records.population], device=device
        ).numpy(),
    }


STAGE = Stage(
    "mia_refs",
    config=(*ATTACK, *CANDIDATES, "target", "utility", "utility_seeds", "weights"),
    reads=("split", "target", "generate"),
    tasks=refs_tasks,
    combine=write_refs,
    row_exempt=(),  # a reference pipeline runs every generator at every K and epsilon
)
