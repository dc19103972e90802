"""Runs a task graph with an executor: which tasks are reused, which run, and when a stage is done.

The driver (this module) alone decides what is reused and commits stage records. Tasks run through
an executor: `SerialExecutor` one at a time in this process (in the graph's order), or
`audit.engine.ray_executor.RayExecutor` as Ray tasks. Either way a task gets a fresh TaskContext,
torch's thread count from the config and its own global seeds, so its bytes depend on its inputs
only, not on which process ran it or what ran there before. Tasks write their files atomically and
record their own row (a unique file per row); a task killed midway leaves neither, and its retry
redoes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audit.core.config import RunConfig
from audit.core.data import ImageDataset
from audit.core.store import RunDir
from audit.engine.context import TaskContext
from audit.engine.keys import (
    RowCache,
    StageRecord,
    check_record,
    load_record,
    save_record,
    stage_key,
)
from audit.engine.serial import Executor, Outcome, TaskSpec, check_reads
from audit.engine.spec import Graph, Stage, Task

log = logging.getLogger(__name__)


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
    # the inputs' files a task may read unnamed: all of them; a row task's, without the stages
    # it reads row by row (fixed once the stage opens: its inputs are committed)
    whole_inputs: frozenset[str] = frozenset()
    row_inputs: frozenset[str] = frozenset()


class Scheduler:
    """Opens each stage once the stages it reads are committed, reuses what is valid, submits
    the rest as its tasks' inputs are ready, and commits the stage when all are done."""

    def __init__(
        self,
        config: RunConfig,
        data: ImageDataset,
        store: RunDir,
        graph: Graph,
        keys: Keys,
        executor: Executor,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.config, self.data, self.store = config, data, store
        self.graph, self.keys, self.executor = graph, keys, executor
        self.timings: dict[str, float] = {}  # stage and part -> seconds, for the manifest
        self.recorded: dict[str, float] = {}  # reused stages' seconds when they were computed
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
        previous = load_record(self.store, stage.name) if stage.cached else None
        why = check_record(self.store, previous, key) if stage.cached else "always runs"
        if why is None and previous is not None:
            self.records[stage.name] = previous
            self.timings[stage.name] = 0.0
            self.recorded[stage.name] = previous.seconds
            self.reused.append(stage.name)
            self.committed.append(stage.name)
            self.finished += len(self.graph.tasks[stage.name])
            log.info("[%s] reused from an earlier run (same settings and inputs)", stage.name)
            return
        if previous is not None:
            log.info("[%s] running again: %s", stage.name, why)
        base_key, upstream = self.keys.row_base(stage, inputs)
        rows = RowCache(self.store, stage.name, base_key, upstream)
        whole = frozenset(name for record in inputs.values() for name in record.files)
        by_row = frozenset(
            name
            for read, record in inputs.items()
            if read not in stage.row_reads
            for name in record.files
        )
        self.open[stage.name] = _Open(
            key, inputs, base_key, upstream, rows, whole_inputs=whole, row_inputs=by_row
        )

    def _submit_ready(self, stage: Stage, state: _Open) -> int:
        submitted = 0
        for task in self.graph.tasks[stage.name]:
            if task.name in state.submitted or not set(task.after) <= state.done:
                continue
            state.submitted.add(task.name)
            base_key, rows = state.base_key, state.rows
            if task.settings is not None:  # keyed by its own plugin's settings alone
                base_key = self.keys.row_base(stage, state.inputs, task)[0]
                rows = RowCache(self.store, stage.name, base_key, state.upstream)
            hit = rows.valid(task.name, task.reads) if task.row else None
            if hit is not None:  # an earlier run computed this row under the same key
                record, result = hit
                state.results[task.name] = result
                state.files.update(record.files)
                state.reused_rows.append(task.name)
                state.done.add(task.name)
                self.finished += 1
                continue
            allowed = self._declared(stage, state, row=task.row) | set(task.reads)
            self.executor.submit(
                TaskSpec(
                    task,
                    self.config,
                    str(self.store.root),
                    base_key,
                    state.upstream,
                    frozenset(allowed),
                )
            )
            submitted += 1
        return submitted

    def seconds(self, stage: str) -> float:
        """What a stage cost: this run's time, or the recorded time of a reused stage."""
        return self.timings.get(stage) or self.recorded.get(stage, 0.0)

    def _declared(self, stage: Stage, state: _Open, *, row: bool = False) -> set[str]:
        """The files a task of this stage may read without naming them: the outputs of the
        stages it reads and of its stage's finished tasks. A row task's key leaves out the
        stages it reads row by row (Stage.row_reads), so of those it may read only what its
        Task.reads name."""
        return set(state.row_inputs if row else state.whole_inputs) | set(state.files)

    def _finished(self, spec: TaskSpec, outcome: Outcome) -> None:
        task = spec.task
        state = self.open[task.stage]
        state.results[task.name] = outcome.result
        state.files.update(outcome.files)
        state.reused_rows += outcome.reused_rows
        state.seconds += outcome.seconds
        state.done.add(task.name)
        self.timings.update(outcome.timings)
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
            store = RunDir(self.store.root)
            combine_ctx = TaskContext(self.config, self.data, store)
            start = time.perf_counter()
            results = {t.name: state.results[t.name] for t in self.graph.tasks[stage.name]}
            stage.combine(combine_ctx, results)
            seconds += time.perf_counter() - start
            check_reads(f"{stage.name} (combine)", store, frozenset(self._declared(stage, state)))
            files.update(store.written_digests())
        files = dict(sorted(files.items()))  # the same record whatever order tasks finished in
        self.timings[stage.name] = round(seconds, 3)
        if state.reused_rows:
            rows = [r for r in state.reused_rows if r]
            self.reused_rows[stage.name] = rows
            log.info("[%s] reused rows: %s", stage.name, ", ".join(rows))
        if stage.cached:
            store = RunDir(self.store.root)
            for name, digest in files.items():
                store.mark_written(name, digest)
            self.records[stage.name] = save_record(store, stage.name, state.key, seconds)
        self.committed.append(stage.name)
        self.on_commit()
