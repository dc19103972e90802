"""One task, run here: the body of the serial executor and of every Ray worker (a fresh
context, the thread count and global seeds from the config, the reads checked against the
declarations), and the serial executor itself."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from audit.core.config import RunConfig
from audit.core.seeding import derive_seed
from audit.core.store import RunDir
from audit.engine.context import TaskContext, dataset_for
from audit.engine.keys import (
    RowCache,
    as_json,
)
from audit.engine.spec import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """All a worker needs to run one task (picklable)."""

    task: Task
    config: RunConfig
    root: str
    base_key: str  # the stage's row key base and the digests of its row-read inputs
    upstream: dict[str, str]
    # what it may read: the outputs of the stages its stage reads, of its stage's finished
    # tasks, and its own Task.reads (a read outside them is an undeclared dependency)
    allowed: frozenset[str] = frozenset()


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
    ctx = TaskContext(config, dataset_for(config), RunDir(spec.root))
    ctx.rows = RowCache(ctx.store, task.stage, spec.base_key, spec.upstream)
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
        result = ctx.row(task.name, partial(task.fn, ctx, *task.args), reads=task.reads)
    else:
        result = as_json(task.fn(ctx, *task.args))
    seconds = time.perf_counter() - start
    _trace("end", task, node)
    check_reads(task.id, ctx.store, spec.allowed, task.resumes)
    return Outcome(
        result,
        ctx.store.written_digests(),
        list(ctx.rows.reused),
        ctx.timings,
        round(seconds, 3),
        node,
        torch.cuda.max_memory_allocated() if cuda else None,
    )


def check_reads(
    who: str, store: RunDir, allowed: frozenset[str], resumes: tuple[str, ...] = ()
) -> None:
    """Fail a task (or a stage's combine step) that read a run-directory file it did not
    declare: its key would not change when that file does, and reuse would go stale.

    Args:
        who: the task's id, for the message.
        store: the run directory object the task read through (its `reads`).
        allowed: the files its declarations cover.
        resumes: globs of its own stage's earlier outputs it may also read (Task.resumes).

    Raises:
        RuntimeError: a read outside them (a bug in the task's declarations).
    """
    own = set(store.written)
    undeclared = sorted(
        name
        for name in store.reads - allowed - own
        if not any(fnmatch.fnmatch(name, pattern) for pattern in resumes)
    )
    if undeclared:
        raise RuntimeError(
            f"task {who} read {', '.join(undeclared)}, which its stage's reads and Task.reads "
            "do not declare"
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
