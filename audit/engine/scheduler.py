"""Runs a task graph with an executor: which tasks are reused, which run, and when a stage is done.

The driver (this module) alone decides what is reused and commits stage records. Tasks run through
an executor: `SerialExecutor` one at a time in this process (in the graph's order), or
`audit.engine.ray_executor.RayExecutor` as Ray tasks. Either way a task gets a fresh Run, torch's
thread count from the config and its own global seeds, so its bytes depend on its inputs only, not
on which process ran it or what ran there before. Tasks write their files atomically and record
their own row (a unique file per row); a task killed midway leaves neither, and its retry redoes it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from audit.core.config import RunConfig
from audit.core.seeding import derive_seed
from audit.core.store import RunDir
from audit.engine.keys import (
    RowCache,
    StageRecord,
    as_json,
    check_record,
    load_record,
    save_record,
    stage_key,
)
from audit.engine.run import Run, dataset_for
from audit.engine.spec import Graph, Stage, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """All a worker needs to run one task (picklable)."""

    task: Task
    config: RunConfig
    root: str
    base_key: str  # the stage's row key base and the digests of its row-read inputs
    upstream: dict[str, str]


@dataclass
class Outcome:
    result: Any
    files: dict[str, str]  # what the task wrote (or reused): name -> sha256
    reused_rows: list[str]
    timings: dict[str, float]
    seconds: float
    node: str = ""  # where it ran (a Ray node id), for the record
    peak_gpu_bytes: int | None = None  # the most GPU memory the task allocated (CUDA runs)


def run_task(spec: TaskSpec) -> Outcome:
    """Run one task here: the serial executor's body and every Ray worker's."""
    task, config = spec.task, spec.config
    if config.threads:
        torch.set_num_threads(config.threads)
    # code that draws from a global RNG gets the same numbers wherever the task runs
    seed = derive_seed(config.seed, "task", task.id)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    run = Run(config, dataset_for(config), RunDir(spec.root))
    run.rows = RowCache(run.store, task.stage, spec.base_key, spec.upstream)
    assert task.fn is not None
    node = node_id()
    _trace("start", task, node)
    # tasks run one at a time per process (serial driver, Ray worker), so the process's peak
    # since this reset is the task's own
    cuda = config.device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if task.row:
        result = run.row(task.name, partial(task.fn, run, *task.args), reads=task.reads)
    else:
        result = as_json(task.fn(run, *task.args))
    seconds = time.perf_counter() - start
    _trace("end", task, node)
    return Outcome(
        result,
        run.store.written_digests(),
        list(run.rows.reused),
        run.timings,
        round(seconds, 3),
        node,
        torch.cuda.max_memory_allocated() if cuda else None,
    )


TRACE_ENV = "SYNTHAUDIT_TASK_TRACE"


def _trace(event: str, task: Task, node: str) -> None:
    """With $SYNTHAUDIT_TASK_TRACE set to a file, one JSON line per task start and end: where
    each attempt ran (a node lost mid-task shows a start without an end, then the retry)."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = json.dumps({"event": event, "task": task.id, "node": node, "pid": os.getpid()})
    with open(path, "a") as handle:  # one short append per line: whole lines, any writer
        handle.write(line + "\n")


def node_id() -> str:
    """The Ray node running this task, or "" outside Ray (which is then never imported)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return str(ray.get_runtime_context().get_node_id())
    return ""


class Executor(Protocol):
    name: str

    def submit(self, spec: TaskSpec) -> None: ...

    def wait(self) -> tuple[TaskSpec, Outcome]:
        """One finished task (raises its error if it failed)."""
        ...

    def close(self) -> None: ...


class SerialExecutor:
    """Today's behaviour: each task in this process, in the order submitted."""

    name = "serial"

    def __init__(self) -> None:
        self.queue: deque[TaskSpec] = deque()

    def submit(self, spec: TaskSpec) -> None:
        self.queue.append(spec)

    def wait(self) -> tuple[TaskSpec, Outcome]:
        spec = self.queue.popleft()
        return spec, run_task(spec)

    def close(self) -> None:
        self.queue.clear()


@dataclass
class Keys:
    """What stage and row keys hash besides the stage's settings and inputs."""

    config: RunConfig
    common: dict[str, Any]  # the data fingerprint and the software versions
    input_files: dict[str, str | None]  # config field -> the digest of the file it names

    def extra(self, stage: Stage) -> dict[str, Any]:
        return self.common | {f: d for f, d in self.input_files.items() if f in stage.config}

    def stage_key(self, stage: Stage, inputs: dict[str, StageRecord]) -> str:
        return stage_key(stage.name, self.config.to_dict(), stage.config, inputs, self.extra(stage))

    def row_base(
        self, stage: Stage, inputs: dict[str, StageRecord], task: Task | None = None
    ) -> tuple[str, dict[str, str]]:
        """The stage's per-row key base (without the settings that say which rows exist, without
        the row_reads stages and, for a task of one plugin, without the other plugins' settings)
        and the digests of the row_reads stages' files."""
        own = None if task is None else task.settings
        base = stage_key(
            stage.name,
            self.config.to_dict(),
            tuple(
                f
                for f in stage.config
                if f not in stage.row_exempt
                and (own is None or f not in stage.plugin_settings or f in own)
            ),
            {name: rec for name, rec in inputs.items() if name not in stage.row_reads},
            self.extra(stage),
        )
        upstream = {
            file: digest
            for name in stage.row_reads
            if name in inputs
            for file, digest in inputs[name].files.items()
        }
        return base, upstream


@dataclass
class _Open:
    """A stage whose inputs are committed and whose tasks are running."""

    key: str
    inputs: dict[str, StageRecord]
    base_key: str
    upstream: dict[str, str]
    rows: RowCache
    results: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    reused_rows: list[str] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    seconds: float = 0.0


class Scheduler:
    """Opens each stage once the stages it reads are committed, reuses what is valid, submits
    the rest as its tasks' inputs are ready, and commits the stage when all are done."""

    def __init__(
        self,
        run: Run,
        graph: Graph,
        keys: Keys,
        executor: Executor,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.run, self.graph, self.keys, self.executor = run, graph, keys, executor
        self.on_commit = on_commit
        self.records: dict[str, StageRecord] = {}
        self.open: dict[str, _Open] = {}
        self.committed: list[str] = []
        self.reused: list[str] = []  # whole stages an earlier run computed
        self.reused_rows: dict[str, list[str]] = {}
        self.nodes: dict[str, str] = {}  # task id -> the node that ran it (Ray)
        self.peak_gpu_mb: dict[str, float] = {}  # task id -> its peak GPU memory (CUDA runs)
        self.finished = 0

    def execute(self) -> None:
        in_flight = 0
        stages = self.graph.stages
        while len(self.committed) < len(stages):
            for stage in stages:
                if stage.name in self.open or stage.name in self.committed:
                    continue
                if all(u in self.committed for u in self.graph.upstream(stage)):
                    self._open_stage(stage)
            progressed = False
            for stage in stages:
                state = self.open.get(stage.name)
                if state is None:
                    continue
                in_flight += self._submit_ready(stage, state)
                if len(state.done) == len(self.graph.tasks[stage.name]):
                    self._commit(stage, state)
                    progressed = True
            if progressed or len(self.committed) == len(stages):
                continue
            if in_flight == 0:
                raise RuntimeError("the task graph cannot progress (a dependency cycle?)")
            spec, outcome = self.executor.wait()
            in_flight -= 1
            self._finished(spec, outcome)

    def _open_stage(self, stage: Stage) -> None:
        inputs = {name: self.records[name] for name in stage.reads if name in self.records}
        key = self.keys.stage_key(stage, inputs)
        previous = load_record(self.run.store, stage.name) if stage.cached else None
        why = check_record(self.run.store, previous, key) if stage.cached else "always runs"
        if why is None and previous is not None:
            self.records[stage.name] = previous
            self.run.timings[stage.name] = 0.0
            self.run.recorded[stage.name] = previous.seconds
            self.reused.append(stage.name)
            self.committed.append(stage.name)
            self.finished += len(self.graph.tasks[stage.name])
            log.info("[%s] reused from an earlier run (same settings and inputs)", stage.name)
            return
        if previous is not None:
            log.info("[%s] running again: %s", stage.name, why)
        base_key, upstream = self.keys.row_base(stage, inputs)
        rows = RowCache(self.run.store, stage.name, base_key, upstream)
        self.open[stage.name] = _Open(key, inputs, base_key, upstream, rows)

    def _submit_ready(self, stage: Stage, state: _Open) -> int:
        submitted = 0
        for task in self.graph.tasks[stage.name]:
            if task.name in state.submitted or not set(task.after) <= state.done:
                continue
            state.submitted.add(task.name)
            base_key, rows = state.base_key, state.rows
            if task.settings is not None:  # keyed by its own plugin's settings alone
                base_key = self.keys.row_base(stage, state.inputs, task)[0]
                rows = RowCache(self.run.store, stage.name, base_key, state.upstream)
            hit = rows.valid(task.name, task.reads) if task.row else None
            if hit is not None:  # an earlier run computed this row under the same key
                record, result = hit
                state.results[task.name] = result
                state.files.update(record.files)
                state.reused_rows.append(task.name)
                state.done.add(task.name)
                self.finished += 1
                continue
            self.executor.submit(
                TaskSpec(task, self.run.config, str(self.run.store.root), base_key, state.upstream)
            )
            submitted += 1
        return submitted

    def _finished(self, spec: TaskSpec, outcome: Outcome) -> None:
        task = spec.task
        state = self.open[task.stage]
        state.results[task.name] = outcome.result
        state.files.update(outcome.files)
        state.reused_rows += outcome.reused_rows
        state.seconds += outcome.seconds
        state.done.add(task.name)
        self.run.timings.update(outcome.timings)
        if outcome.node:
            self.nodes[task.id] = outcome.node
        if outcome.peak_gpu_bytes is not None:
            self.peak_gpu_mb[task.id] = round(outcome.peak_gpu_bytes / 2**20, 1)
        self.finished += 1
        log.info(
            "[graph] %d/%d tasks done: %s (%.1f s)",
            self.finished,
            len(self.graph),
            task.id,
            outcome.seconds,
        )

    def _commit(self, stage: Stage, state: _Open) -> None:
        del self.open[stage.name]
        files = state.files
        seconds = state.seconds
        if stage.combine is not None:
            store = RunDir(self.run.store.root)
            combine_run = Run(self.run.config, self.run.data, store, timings=self.run.timings)
            start = time.perf_counter()
            results = {t.name: state.results[t.name] for t in self.graph.tasks[stage.name]}
            stage.combine(combine_run, results)
            seconds += time.perf_counter() - start
            files.update(store.written_digests())
        files = dict(sorted(files.items()))  # the same record whatever order tasks finished in
        self.run.timings[stage.name] = round(seconds, 3)
        if state.reused_rows:
            rows = [r for r in state.reused_rows if r]
            self.reused_rows[stage.name] = rows
            log.info("[%s] reused rows: %s", stage.name, ", ".join(rows))
        if stage.cached:
            store = RunDir(self.run.store.root)
            for name, digest in files.items():
                store.mark_written(name, digest)
            self.records[stage.name] = save_record(store, stage.name, state.key, seconds)
        self.committed.append(stage.name)
        self.on_commit()
