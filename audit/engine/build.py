"""From a config to the task graph: the checks that can reject bad input before anything is
written (`prepare`), the plan and graph, the keys that decide reuse, and `--dry-run`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from audit.core import layout
from audit.core.config import RunConfig
from audit.core.data import ImageDataset, load_dataset
from audit.core.errors import AuditError
from audit.core.models import build_model, check_fits, require_bn
from audit.core.provenance import package_versions, source_digest
from audit.core.splits import load_split_file
from audit.core.store import RunDir
from audit.core.weights import load_weights
from audit.engine.keys import RowCache, StageRecord, check_record, load_record, path_fingerprint
from audit.engine.pipeline import STAGES
from audit.engine.scheduler import Keys
from audit.engine.spec import Graph, Plan, build_graph, describe, planned_releases
from generators.registry import plugin


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


def dry_run(config: RunConfig) -> str:
    """The graph `audit run` would execute, each task's estimated cost, and what an earlier run in
    --out already did (so would be reused). Nothing is written."""
    data = prepare(config)
    graph = graph_of(config, data)
    done: dict[str, float] = {}
    root = Path(config.out) if config.out else None
    if root is not None and (root / layout.CONFIG).exists():
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
    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()
