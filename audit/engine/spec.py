"""The audit as a graph of tasks, built from the config before anything runs.

A stage is a named step with declared settings and inputs (the stages it reads); it is done as
one or more tasks. A task is one unit of work a worker can run alone: the split, the target, one
generator's sets, one reference pipeline, one row's privacy, utility or attack. Tasks are
module-level functions of (run, *args), so a Ray worker can import them; a row task's result is
cached per row (audit/engine/keys.py: its key is the stage's settings plus the digests of the files
it reads). A stage with row tasks has a combine step, run by the driver once its tasks are done,
that writes the stage's summary file from their results.

Dependencies are per stage (every task of a stage waits for the stages it reads) plus, inside a
stage, a task's `after` (privacy's rows read the holdout row's scores). Rows of one stage, the
reference pipelines and the generators therefore run side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.core import layout
from audit.core.columns import Column
from audit.core.config import RunConfig
from audit.core.layout import row_name
from audit.engine.keys import ROW_EXEMPT_FIELDS
from generators.registry import REGISTRY, plugin

if TYPE_CHECKING:
    from audit.engine.context import TaskContext


# groups of RunConfig fields that stages declare (Stage.config)
DATA = ("dataset", "data_root", "image_size")  # + the loaded images' fingerprint
COMPUTE = ("seed", "device", "threads")  # threads: torch's reductions depend on the count
ATTACK = (*DATA, "model", *COMPUTE)
CANDIDATES = ("mia_candidates", "max_reference", "mia_refs", "mia_augment")
# every generator's own settings, as their plugins declare them (generators/registry.py)
GENERATOR_SETTINGS = tuple(dict.fromkeys(s for p in REGISTRY.values() for s in p.settings))
GENERATION = ("generator", "k", "epsilon", "n_synthetic", *GENERATOR_SETTINGS)


@dataclass(frozen=True)
class Task:
    stage: str
    name: str = ""  # the row ("bn_match-k200", "real", "target", "ref3") or part; "" = whole stage
    fn: Callable[..., Any] | None = None  # module-level fn(run, *args) -> JSON-able result
    args: tuple[Any, ...] = ()
    reads: tuple[str, ...] = ()  # run-directory files its row key hashes (beyond stage inputs)
    after: tuple[str, ...] = ()  # names of tasks of the same stage whose outputs it reads
    row: bool = True  # its result is cached as one row; False: the whole stage, or a group
    device: bool = True  # uses the compute device (under Ray with CUDA: asks for a GPU)
    cost: float = 0.0  # estimated seconds on the reference CPU (audit/engine/costs.py)
    # the stage's plugin_settings this task's plugin reads (None: all of them); its row key holds
    # these and no other plugin's, so a setting of one generator does not rerun another
    settings: tuple[str, ...] | None = None
    # globs of its own stage's earlier outputs it may read to go on from (BN matching's
    # checkpoints): not keyed, each is checked against its row record's digest before use
    resumes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.name}" if self.name else self.stage


@dataclass(frozen=True)
class Release:
    """A set the config asks for, known before any generator runs."""

    row: str
    path: str  # in the run directory
    generator: str
    k: int | None = None
    epsilon: float | None = None


def planned_releases(config: RunConfig) -> tuple[Release, ...]:
    """Every release of the run, in the order generate.json lists them."""
    out = []
    for name in config.generator:
        generator = plugin(name)
        for key in generator.keys(config):
            k, epsilon = generator.setting(key)
            out.append(
                Release(
                    row_name(name, k, epsilon), layout.synthetic(name, k, epsilon), name, k, epsilon
                )
            )
    return tuple(out)


TARGET_ROW = "target"


@dataclass(frozen=True)
class Plan:
    """What task builders know before anything runs: the config, the planned releases and the
    data's size (for cost estimates)."""

    config: RunConfig
    releases: tuple[Release, ...]
    n_images: int = 0  # in the loaded dataset
    image_size: int = 16
    channels: int = 1

    def attacked_models(self) -> dict[str, str]:
        """Every classifier the model attacks target: row -> saved weights in the run directory."""
        return {TARGET_ROW: layout.TARGET} | {r.row: layout.model(r.row) for r in self.releases}


@dataclass(frozen=True)
class Stage:
    """A named step. config: the RunConfig fields its outputs depend on; reads: the stages whose
    outputs it reads. Both key its outputs for reuse (audit/engine/keys.py); a stage with
    cached=False runs every time (the report: cheap, and it must reflect the whole run).

    run: the whole stage as one task; or tasks (its tasks, from the plan) and combine (the
    driver's step that writes the stage's summary from the tasks' results, by task name)."""

    name: str
    run: Callable[[TaskContext], Any] | None = None
    config: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    cached: bool = True
    # stages among `reads` whose outputs its tasks read one row at a time (Task.reads): they key
    # each row through the files it names, not the whole stage
    row_reads: tuple[str, ...] = ()
    tasks: Callable[[Plan], list[Task]] | None = None
    combine: Callable[[TaskContext, dict[str, Any]], None] | None = None
    # settings a row's key leaves out (which rows exist); () when each row depends on all of them
    row_exempt: tuple[str, ...] = ROW_EXEMPT_FIELDS
    cost: Callable[[Plan], float] | None = None  # the whole-stage task's estimate
    # settings among `config` that each belong to one plugin (a generator's section): a task's
    # row key takes only those of its own plugin (Task.settings)
    plugin_settings: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()  # the results columns its outputs add (columns/<stage>.json)
    # run-directory files its whole-stage task reads beyond the stages' outputs (the manifest)
    files: tuple[str, ...] = ()
    device: bool = True

    def plan(self, plan: Plan) -> list[Task]:
        if self.tasks is not None:
            return self.tasks(plan)
        cost = self.cost(plan) if self.cost else 0.0
        return [
            Task(
                self.name, "", self.run, reads=self.files, row=False, device=self.device, cost=cost
            )
        ]


@dataclass(frozen=True)
class Graph:
    stages: tuple[Stage, ...]
    tasks: dict[str, tuple[Task, ...]] = field(default_factory=dict)  # stage -> its tasks

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def upstream(self, stage: Stage) -> tuple[str, ...]:
        """The stages that must be committed before this one's tasks start."""
        names = {s.name for s in self.stages}
        return tuple(r for r in stage.reads if r in names)

    def __len__(self) -> int:
        return sum(len(t) for t in self.tasks.values())


def build_graph(stages: list[Stage], plan: Plan) -> Graph:
    """Every task of the run, per stage, in the order the serial executor runs them."""
    tasks = {stage.name: tuple(stage.plan(plan)) for stage in stages}
    for stage in stages:
        names = {t.name for t in tasks[stage.name]}
        for task in tasks[stage.name]:
            missing = set(task.after) - names
            if missing:
                raise ValueError(f"task {task.id} waits for unknown tasks {sorted(missing)}")
        if len(names) != len(tasks[stage.name]):
            raise ValueError(f"stage {stage.name} has two tasks of the same name")
    known: set[str] = set()
    for stage in stages:  # stages are listed after what they read: no cycles by construction
        unknown = [r for r in stage.reads if r not in known and r in tasks]
        if unknown:
            raise ValueError(f"stage {stage.name} reads {unknown}, listed after it")
        known.add(stage.name)
    return Graph(tuple(stages), tasks)


def describe(graph: Graph, done: dict[str, float]) -> str:
    """The graph as `audit run --dry-run` prints it: each task, what it waits for, its estimated
    cost, and whether an earlier run already did it (done: task id -> recorded seconds)."""
    lines = []
    width = max((len(t.id) for tasks in graph.tasks.values() for t in tasks), default=10)
    header = f"{'task':<{width}}  {'est. s':>8}  {'status':<16}  waits for"
    lines += [header, "-" * len(header)]
    todo = 0.0
    for stage in graph.stages:
        for task in graph.tasks[stage.name]:
            waits = [*graph.upstream(stage), *(f"{stage.name}:{a}" for a in task.after)]
            if len(waits) > 1 and len(waits) == len(graph.stages) - 1:
                waits = ["every other stage"]
            if task.id in done:
                status = f"done ({done[task.id]:.1f} s)"
            else:
                status, todo = "to run", todo + task.cost
            lines.append(
                f"{task.id:<{width}}  {task.cost:>8.1f}  {status:<16}  {', '.join(waits) or '-'}"
            )
    n_done = sum(1 for tasks in graph.tasks.values() for t in tasks if t.id in done)
    lines.append(
        f"{len(graph)} tasks in {len(graph.stages)} stages; {n_done} done, {len(graph) - n_done} "
        f"to run, about {_duration(todo)} of work on the reference 2-core CPU "
        "(audit/engine/costs.py; a GPU is far faster)"
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
