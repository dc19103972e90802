"""`audit run`: the list of what an audit is, and the driver that runs it.

Each stage declares the settings it depends on and the stages it reads, and is done as one or
more tasks (audit/engine/spec.py). The graph is built from the config before anything runs; a task
whose key and outputs check is reused (audit/engine/keys.py); the rest run through an executor,
one at a time here or as Ray tasks (audit/engine/scheduler.py, audit/engine/ray_executor.py), with
the same bytes either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from attacks.tasks.canaries import stage_canaries
from attacks.tasks.features import features_tasks, write_features
from attacks.tasks.inversion import inversion_tasks, write_inversion
from attacks.tasks.mia_model import mia_model_tasks, write_mia_model
from attacks.tasks.mia_release import mia_release_tasks, write_mia_release
from attacks.tasks.population import stage_population_model
from attacks.tasks.refs import refs_tasks, write_refs
from audit.core.config import RunConfig
from audit.core.data import ImageDataset, load_dataset, load_split_file
from audit.core.errors import AuditError
from audit.core.models import build_model, check_fits, load_weights, require_bn
from audit.core.provenance import environment, package_versions, source_digest
from audit.core.store import RunDir
from audit.engine import costs
from audit.engine.keys import (
    RowCache,
    StageRecord,
    check_record,
    load_record,
    path_fingerprint,
)
from audit.engine.run import Run, remember_dataset
from audit.engine.scheduler import Executor, Keys, Scheduler, SerialExecutor
from audit.engine.spec import Graph, Plan, Stage, build_graph, describe, planned_releases
from audit.tasks.fidelity import stage_fidelity
from audit.tasks.generate import generate_tasks, write_releases
from audit.tasks.privacy import privacy_tasks, write_privacy
from audit.tasks.report import stage_report
from audit.tasks.split import stage_split, stage_target
from audit.tasks.utility import utility_tasks, write_utility
from generators.registry import REGISTRY, plugin

log = logging.getLogger(__name__)

_DATA = ("dataset", "data_root", "image_size")  # + the loaded images' fingerprint
_COMPUTE = ("seed", "device", "threads")  # threads: torch's reductions depend on the count
_ATTACK = (*_DATA, "model", *_COMPUTE)
_CANDIDATES = ("mia_candidates", "max_reference", "mia_refs", "mia_augment")
# every generator's own settings, as their plugins declare them (generators/registry.py)
GENERATOR_SETTINGS = tuple(dict.fromkeys(s for p in REGISTRY.values() for s in p.settings))
_GENERATION = ("generator", "k", "epsilon", "n_synthetic", *GENERATOR_SETTINGS)

STAGES: list[Stage] = [
    Stage(
        "split",
        stage_split,
        config=(
            *(*_DATA, "seed", "member_fraction", "nonmember_fraction", "max_members"),
            *("max_nonmembers", "max_test", "split", "weights"),
        ),
        device=False,
    ),
    Stage(
        "target",
        stage_target,
        config=(*_DATA, "model", "weights", "target", *_COMPUTE),
        reads=("split",),
        cost=costs.target_cost,
    ),
    Stage(
        "generate",
        config=(*_GENERATION, *_COMPUTE),
        reads=("split", "target"),
        tasks=generate_tasks,
        combine=write_releases,
        plugin_settings=GENERATOR_SETTINGS,
    ),
    Stage(
        "privacy",
        config=(
            *(
                *_DATA,
                "similarity_levels",
                "nn_k",
                "nn_shift",
                "nn_mirror",
                "max_reference",
                "max_holdout",
            ),
            *_COMPUTE,
        ),
        reads=("split", "generate"),
        row_reads=("generate",),
        tasks=privacy_tasks,
        combine=write_privacy,
    ),
    Stage(
        "utility",
        config=(*_DATA, "model", "utility", "utility_seeds", "real_utility_seeds", *_COMPUTE),
        reads=("split", "generate"),
        row_reads=("generate",),
        tasks=utility_tasks,
        combine=write_utility,
    ),
    Stage(
        "mia_refs",
        config=(*_ATTACK, *_CANDIDATES, "target", "utility", "utility_seeds", "weights"),
        reads=("split", "target", "generate"),
        tasks=refs_tasks,
        combine=write_refs,
        row_exempt=(),  # a reference pipeline runs every generator at every K and epsilon
    ),
    Stage(
        "population_model",
        stage_population_model,
        config=(*_ATTACK, "inversion", "target", "attacker_weights"),
        reads=("split",),
        cost=costs.population_cost,
    ),
    Stage(
        "mia_release",
        config=(*_ATTACK, *_CANDIDATES, "eps_delta", "nn_shift", "nn_mirror"),
        reads=("split", "target", "generate", "mia_refs", "population_model"),
        row_reads=("generate",),
        tasks=mia_release_tasks,
        combine=write_mia_release,
    ),
    Stage(
        "mia_model",
        config=(*_ATTACK, *_CANDIDATES, "eps_delta"),
        reads=("split", "target", "generate", "utility", "mia_refs"),
        row_reads=("generate", "utility"),
        tasks=mia_model_tasks,
        combine=write_mia_model,
    ),
    Stage(
        "inversion",
        config=(*_ATTACK, "inversion", "target"),
        reads=("split", "target", "generate", "utility", "population_model"),
        row_reads=("generate", "utility"),
        tasks=inversion_tasks,
        combine=write_inversion,
    ),
    Stage(
        "features",
        config=(*_ATTACK, "features"),
        reads=("split", "target", "generate", "utility"),
        row_reads=("generate", "utility"),
        tasks=features_tasks,
        combine=write_features,
    ),
    Stage(
        "fidelity",
        stage_fidelity,
        config=(*_ATTACK, "inception_weights"),
        reads=("split", "generate", "privacy", "population_model"),
    ),
    Stage(  # the one-run epsilon audit, the costliest, last
        "canaries",
        stage_canaries,
        config=(*_ATTACK, "weights", "canaries", "gradient_canaries", "target", *_GENERATION),
        reads=("split", "generate"),
        cost=costs.canary_cost,
    ),
]
# the report reads every stage's outputs: it runs last, every time
STAGES.append(Stage("report", stage_report, reads=tuple(s.name for s in STAGES), cached=False))


def prepare(config: RunConfig) -> ImageDataset:
    """Everything that can reject bad input, done before any file is written."""
    data = load_dataset(
        config.dataset, config.data_root, image_size=config.image_size, download=config.download
    )
    model = build_model(
        config.model,
        channels=data.channels,
        num_classes=len(data.classes),
        seed=config.seed,
        image_size=data.image_size,
    )
    check_fits(
        model,
        config.model,
        channels=data.channels,
        image_size=data.image_size,
        classes=len(data.classes),
    )
    if config.weights:
        load_weights(model, config.weights, model_name=config.model)
    if config.inception_weights:
        from audit.core.fidelity import load_inception

        load_inception(config.inception_weights, "cpu")
    if config.attacker_weights:
        load_weights(
            model, config.attacker_weights, model_name=config.model, flag="--attacker-weights"
        )
    if config.split:
        split = load_split_file(config.split, len(data.images))
        if len(split.nonmembers) < 2:
            raise AuditError(
                f"--split {config.split} has {len(split.nonmembers)} non-member(s); the "
                "holdout statistics need at least 2"
            )
    if config.synthetic:
        from generators.external import load_synthetic

        load_synthetic(
            config.synthetic,
            classes=data.classes,
            channels=data.channels,
            image_size=data.image_size,
        )
    for name in config.generator:
        declared = plugin(name)
        if declared.from_teacher:
            require_bn(model, config.model)
        declared.build(config)  # a generator's constructor may reject its settings
        declared.check(config, data.channels, data.image_size)
    return data


def _open_run_dir(out: Path, overwrite: bool) -> RunDir:
    """A new directory, or an earlier run's to resume (--overwrite starts it afresh)."""
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise AuditError(f"--out {out} is not empty and is not a run directory; choose another")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return RunDir(out)


FINAL_OUTPUTS = ("results.json", "results.csv", "report.html")


def plan_of(config: RunConfig, data: ImageDataset) -> Plan:
    return Plan(config, planned_releases(config), len(data.images), data.image_size, data.channels)


def graph_of(config: RunConfig, data: ImageDataset) -> Graph:
    """Every task of the run, built from the config and the data's shape alone."""
    return build_graph(STAGES, plan_of(config, data))


def run_keys(config: RunConfig, data: ImageDataset) -> Keys:
    # another version of the suite or of the numerics under it may compute other bytes: an
    # upgrade recomputes rather than mixing old outputs with new
    software = {n: v for n, v in package_versions().items() if n in KEYED_PACKAGES}
    software["synthaudit_source"] = source_digest()  # an edit without a version bump counts
    input_files = {  # hashed once; each stage's key takes those it declares
        field: path_fingerprint(getattr(config, field))
        for field in ("weights", "split", "synthetic", "attacker_weights", "inception_weights")
    }
    return Keys(config, {"data": data_fingerprint(data), "software": software}, input_files)


def execute(
    config: RunConfig,
    *,
    overwrite: bool = False,
    argv: list[str] | None = None,
    executor: Executor | None = None,
) -> Path:
    """Run every task; returns the run directory. results.* and report.html exist only when every
    stage succeeded; config.json says "running", "complete" or "failed"."""
    data = prepare(config)
    graph = graph_of(config, data)
    store = _open_run_dir(Path(config.out), overwrite)
    run = Run(config, data, store)
    remember_dataset(config, data)  # serial tasks use the loaded images, not a second copy
    executor = executor or SerialExecutor()
    manifest: dict[str, Any] = {
        "status": "running",
        "command": ["audit", *(argv if argv is not None else sys.argv[1:])],
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": config.seed,
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "environment": environment(),
        "executor": executor.name,
        "tasks": len(graph),
        "timings_s": run.timings,
    }
    for name in FINAL_OUTPUTS:  # a resumed run's old results must not look final meanwhile
        store.path(name).unlink(missing_ok=True)
    store.write_json("config.json", manifest)
    total = time.perf_counter()
    scheduler = Scheduler(run, graph, run_keys(config, data), executor)

    def reused() -> list[str]:  # in the order of the stage list, whatever order they ran in
        return [s.name for s in STAGES if s.name in scheduler.reused]

    def progress() -> None:  # what a killed run shows, and what the report reads
        in_stage_order(run.timings)
        manifest["reused_stages"] = reused()
        manifest["reused_rows"] = scheduler.reused_rows
        store.write_json("config.json", manifest)

    scheduler.on_commit = progress
    try:
        scheduler.execute()
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        store.write_json("config.json", manifest)
        raise
    finally:
        executor.close()
    run.timings["total"] = round(time.perf_counter() - total, 3)
    in_stage_order(run.timings)
    manifest.update(
        status="complete",
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reused_stages=reused(),
        reused_rows={
            s.name: scheduler.reused_rows[s.name] for s in STAGES if s.name in scheduler.reused_rows
        },
        # what each stage cost when it was computed, in this run or the one it was reused from
        stage_seconds={stage.name: run.seconds(stage.name) for stage in STAGES},
    )
    if scheduler.nodes:
        manifest["task_nodes"] = scheduler.nodes
    if scheduler.peak_gpu_mb:  # MiB per task id, in the graph's order
        ids = [task.id for tasks in graph.tasks.values() for task in tasks]
        order = {task_id: i for i, task_id in enumerate(ids)}
        peaks = sorted(scheduler.peak_gpu_mb.items(), key=lambda kv: order.get(kv[0], len(order)))
        manifest["peak_gpu_mb"] = dict(peaks)
    store.write_json("config.json", manifest)
    if scheduler.reused:
        log.info("reused %d of %d stages: %s", len(reused()), len(STAGES), ", ".join(reused()))
    return store.root


def in_stage_order(timings: dict[str, float]) -> None:
    """Timings ("privacy", "features.target.hcr", "total") in the stage list's order, whatever
    order the executor finished them in: the report's table is the same for both executors."""
    order = {s.name: i for i, s in enumerate(STAGES)}
    items = sorted(timings.items(), key=lambda kv: order.get(kv[0].split(".")[0], len(order)))
    timings.clear()
    timings.update(items)


def dry_run(config: RunConfig) -> str:
    """The graph `audit run` would execute, each task's estimated cost, and what an earlier run in
    --out already did (so would be reused). Nothing is written."""
    data = prepare(config)
    graph = graph_of(config, data)
    done: dict[str, float] = {}
    root = Path(config.out) if config.out else None
    if root is not None and (root / "config.json").exists():
        done = done_tasks(graph, RunDir(root), run_keys(config, data))
    return describe(graph, done)


def done_tasks(graph: Graph, store: RunDir, keys: Keys) -> dict[str, float]:
    """Task id -> recorded seconds, for the tasks a rerun would reuse as things stand. Stages are
    keyed on their inputs' records, so only stages whose inputs are all reusable can say."""
    records: dict[str, StageRecord] = {}
    done: dict[str, float] = {}
    for stage in graph.stages:
        if not stage.cached or any(u not in records for u in graph.upstream(stage)):
            continue
        inputs = {name: records[name] for name in graph.upstream(stage)}
        previous = load_record(store, stage.name)
        if (
            previous is not None
            and check_record(store, previous, keys.stage_key(stage, inputs)) is None
        ):
            records[stage.name] = previous
            tasks = graph.tasks[stage.name]
            for task in tasks:
                done[task.id] = previous.seconds / max(len(tasks), 1)
            continue
        rows = RowCache(store, stage.name, *keys.row_base(stage, inputs))
        for task in graph.tasks[stage.name]:
            if not task.row or not all(store.path(f).is_file() for f in task.reads):
                continue
            own = rows
            if task.settings is not None:
                own = RowCache(store, stage.name, *keys.row_base(stage, inputs, task))
            hit = own.valid(task.name, task.reads)
            if hit is not None:
                done[task.id] = hit[0].seconds
    return done


KEYED_PACKAGES = ("synthaudit", "torch", "pytorchcv", "piq", "numpy")


def data_fingerprint(data: ImageDataset) -> str:
    """sha256 of the loaded images and labels: a changed data root invalidates every stage."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()
