"""Synthetic sets: one task per generator (each generator's Ks or epsilons on one trajectory).

A K an earlier run on this directory already released is reused; a new K goes on from the
checkpoint of the largest smaller K that run saved (one trajectory serves every K), so adding
--k 4000 to a 500/2000 run costs 2,000 steps.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from audit.core import layout
from audit.core.layout import row_name
from audit.engine.context import TaskContext, generation_request
from audit.engine.costs import generation_cost
from audit.engine.keys import RECORD_DIR
from audit.engine.spec import COMPUTE, GENERATION, GENERATOR_SETTINGS, Plan, Stage, Task
from generators.base import GeneratorPlugin, SetKey, SyntheticSet
from generators.registry import plugin

log = logging.getLogger(__name__)


def generate_tasks(plan: Plan) -> list[Task]:
    return [
        Task(
            "generate",
            name,
            generate_with,
            (name,),
            row=False,
            cost=generation_cost(plan, name),
            settings=plugin(name).settings,
            resumes=(layout.checkpoints_of(name),),
        )
        for name in plan.config.generator
    ]


def write_releases(ctx: TaskContext, results: dict[str, Any]) -> None:
    """generate.json: every generator's release entries, in the config's order."""
    releases = [entry for name in ctx.config.generator for entry in results[name]]
    ctx.store.write_json(layout.GENERATE, {"releases": releases})


def generate_with(ctx: TaskContext, name: str) -> list[dict[str, Any]]:
    c, rows = ctx.config, ctx.rows
    declared = plugin(name)
    keys = declared.keys(c)

    def key_row(key: SetKey) -> str:
        return row_name(name, *declared.setting(key))

    done = {key: rows.reuse(key_row(key), ()) if rows else None for key in keys}
    missing = [key for key in keys if done[key] is None]
    resume_k = None
    if missing and declared.axis == "k" and rows is not None:
        first = min(int(k) for k in missing if k is not None)
        reused_now = [int(k) for k, entry in done.items() if k is not None and entry is not None]
        earlier = _recorded_ks(ctx, name, skip=set(c.k))  # e.g. from a run with other Ks
        resume_k = max((k for k in reused_now + earlier if k < first), default=None)
    if missing:

        def save(key: SetKey, synthetic: SyntheticSet) -> None:
            done[key] = ctx.row(key_row(key), partial(_release, ctx, declared, key, synthetic))

        resume = None if resume_k is None else ctx.store.read_npz(layout.checkpoint(name, resume_k))
        split = ctx.split()
        request = generation_request(
            ctx.config,
            ctx.data,
            ctx.target(),
            ctx.data.images[split.members],
            ctx.data.labels[split.members],
            ks=tuple(int(k) for k in missing if k is not None) if declared.axis == "k" else c.k,
            epsilons=tuple(float(e) for e in missing if e is not None)
            if declared.axis == "epsilon"
            else (),
            resume=resume,
            on_set=save,  # each set is saved as soon as it is final: a kill keeps it
        )
        if resume_k is not None:
            log.info("[generate] %s: going on from the checkpoint at K=%d", name, resume_k)
        start = time.perf_counter()
        sets = declared.build(c).generate(request)
        ctx.record_time(f"generate.{name}", time.perf_counter() - start)
        for key in missing:
            if done[key] is None:  # a generator that only returns its sets
                save(key, sets[key])
    return [entry for entry in done.values() if entry is not None]  # in the order of keys


def _release(
    ctx: TaskContext, declared: GeneratorPlugin, key: SetKey, synthetic: SyntheticSet
) -> dict[str, Any]:
    """Write one set (and its checkpoint) and return its generate.json entry."""
    name = declared.name
    k, epsilon = declared.setting(key)
    path = layout.synthetic(name, k, epsilon)
    ctx.store.write_npz(path, images=synthetic.images, labels=synthetic.labels)
    if k is not None and synthetic.checkpoint is not None:
        ctx.store.write_npz_uncompressed(layout.checkpoint(name, k), synthetic.checkpoint)
    log.info(
        "[generate] %s: %d images -> %s", row_name(name, k, epsilon), len(synthetic.images), path
    )
    entry: dict[str, Any] = {"generator": name, "k": k}
    if declared.axis == "epsilon":
        entry["epsilon"] = epsilon
    return {**entry, "path": path, "n_synthetic": len(synthetic.images), **synthetic.info}


def _recorded_ks(ctx: TaskContext, name: str, *, skip: set[int | None]) -> list[int]:
    """Ks (outside skip) of this generator whose rows (set and checkpoint) an earlier run on this
    directory left valid under the current settings."""
    assert ctx.rows is not None
    found = []
    for record in ctx.store.path(f"{RECORD_DIR}/generate").glob(f"{name}-k*.json"):
        suffix = record.stem.removeprefix(f"{name}-k")
        if not suffix.isdigit() or int(suffix) in skip:
            continue
        k = int(suffix)
        hit = ctx.rows.valid(row_name(name, k), ())
        if hit is not None and layout.checkpoint(name, k) in hit[0].files:
            found.append(k)
    return found


STAGE = Stage(
    "generate",
    config=(*GENERATION, *COMPUTE),
    reads=("split", "target"),
    tasks=generate_tasks,
    combine=write_releases,
    plugin_settings=GENERATOR_SETTINGS,
)
