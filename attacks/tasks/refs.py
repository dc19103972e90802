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
from audit.core.models import NormalizedClassifier
from audit.core.seeding import derive_seed, numpy_rng
from audit.core.store import row_name, row_of
from audit.core.training import predict_logits, train_classifier
from audit.engine.costs import reference_cost
from audit.engine.run import Run
from audit.engine.spec import ATTACK, CANDIDATES, TARGET_ROW, Plan, Stage, Task
from generators.registry import plugin

log = logging.getLogger(__name__)


def refs_tasks(plan: Plan) -> list[Task]:
    cost = reference_cost(plan)
    return [
        Task("mia_refs", f"ref{i}", reference_pipeline, (i,), cost=cost)
        for i in range(plan.config.mia_refs)
    ]


def reference_halves(run: Run, records: AttackRecords) -> np.ndarray:
    """(references, pool) IN mask: every pool record is IN for exactly half the references."""
    c = run.config
    return assign_halves(
        len(records.pool), c.mia_refs, numpy_rng(c.seed, "mia", "reference-halves")
    )


def reference_pipeline(run: Run, i: int) -> None:
    """Reference i: its target, every generator's sets and a retrained model per release."""
    c, data = run.config, run.data
    start = time.perf_counter()
    records = attack_records(run)
    keep = reference_halves(run, records)[i]
    rows = reference_rows(run)
    train_idx = records.pool[keep]
    model = run.new_model(f"reference-{i}-target")
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
    arrays.update(_logits(run, model, TARGET_ROW, records))
    for name in sorted({r["generator"] for r in rows}):
        request = run.generation_request(
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
            retrained = run.retrain(synthetic.images, synthetic.labels, f"reference-{i}-{row}")
            arrays.update(_logits(run, retrained, row, records))
    run.store.write_npz(f"refs/ref{i}.npz", **arrays)
    seconds = round(time.perf_counter() - start, 3)
    run.timings[f"mia_refs.ref{i}"] = seconds  # config.json: results stay deterministic
    log.info("[mia_refs] reference %d/%d done in %.1f s", i + 1, c.mia_refs, seconds)


def write_refs(run: Run, results: dict[str, Any]) -> None:
    """refs.json: how many references ran and which rows they cover."""
    n = run.config.mia_refs
    if n == 0:
        run.store.write_json("refs.json", {"n_references": 0})
        return
    records = attack_records(run)
    n_members = int(records.pool_is_member.sum())
    size_note = reference_size_note(n_members, len(records.pool) - n_members)
    if size_note:
        log.warning("[mia_refs] %s", size_note)
    run.store.write_json(
        "refs.json",
        {
            "n_references": n,
            "rows": [TARGET_ROW, *(row_of(r) for r in reference_rows(run))],
            "pool_size": len(records.pool),
            "size_note": size_note,
        },
    )


def _logits(
    run: Run, model: NormalizedClassifier, row: str, records: AttackRecords
) -> dict[str, np.ndarray]:
    device = run.config.device
    return {
        f"logits_{row}": query_logits(run, model, run.data.images[records.pool]),
        f"population_logits_{row}": predict_logits(
            model, run.data.images[records.population], device=device
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
