"""Utility: retrain from scratch on each release (and on the real members) with utility_seeds
seeds; the mean test accuracy and, with more than one seed, its standard deviation. The first
seed's model of each release is kept (models/<row>.pt) for the attacks on retrained models."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from audit.core import layout
from audit.core.training import accuracy
from audit.engine.context import TaskContext, retrain_on
from audit.engine.costs import training_cost
from audit.engine.spec import COMPUTE, DATA, Plan, Stage, Task

log = logging.getLogger(__name__)


def utility_tasks(plan: Plan) -> list[Task]:
    c = plan.config
    real_seeds = c.utility_seeds if c.real_utility_seeds is None else c.real_utility_seeds
    n_real = round(plan.n_images * c.member_fraction)
    if c.max_members:
        n_real = min(n_real, c.max_members)
    epochs = c.utility.epochs
    return [
        Task(
            "utility",
            "real",
            utility_of_real,
            cost=training_cost(plan, epochs * real_seeds, n_real),
        ),
        *(
            Task(
                "utility",
                r.row,
                utility_of_release,
                (r.path, r.row),
                reads=(r.path,),
                cost=training_cost(plan, epochs * c.utility_seeds, c.n_synthetic),
            )
            for r in plan.releases
        ),
    ]


def utility_of_real(ctx: TaskContext) -> dict[str, Any]:
    split = ctx.split()
    return _utility_of(ctx, ctx.data.images[split.members], ctx.data.labels[split.members], "real")


def utility_of_release(ctx: TaskContext, path: str, name: str) -> dict[str, Any]:
    synthetic = ctx.store.read_npz(path)
    return _utility_of(ctx, synthetic["images"], synthetic["labels"], name)


def write_utility(ctx: TaskContext, results: dict[str, Any]) -> None:
    ctx.store.write_json(layout.UTILITY, {"rows": results})


def _utility_of(
    ctx: TaskContext, images: np.ndarray, labels: np.ndarray, name: str
) -> dict[str, Any]:
    c, data, split = ctx.config, ctx.data, ctx.split()
    test_images, test_labels = data.images[split.test], data.labels[split.test]
    accs = []
    seeds = c.utility_seeds
    if name == "real" and c.real_utility_seeds is not None:
        seeds = c.real_utility_seeds
    for repeat in range(seeds):
        model = retrain_on(ctx.config, ctx.data, images, labels, f"utility-{name}-{repeat}")
        accs.append(accuracy(model, test_images, test_labels, device=c.device))
        if repeat == 0 and name != "real":
            ctx.store.write_state_dict(layout.model(name), model.state_dict())
    row = {"utility_acc": float(np.mean(accs)), "utility_accs": accs}
    if len(accs) > 1:
        row["utility_acc_std"] = float(np.std(accs, ddof=1))
    log.info(
        "[utility] %s: test accuracy %s",
        name,
        " ".join(f"{a:.3f}" for a in accs)
        + (f" (mean {row['utility_acc']:.3f})" if len(accs) > 1 else ""),
    )
    return row


STAGE = Stage(
    "utility",
    config=(*DATA, "model", "utility", "utility_seeds", "real_utility_seeds", *COMPUTE),
    reads=("split", "generate"),
    row_reads=("generate",),
    tasks=utility_tasks,
    combine=write_utility,
)
