"""`audit run`'s driver: opens the run directory, records the manifest (config.json), runs the
graph through the scheduler and writes the final outputs only when every stage succeeded."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from audit.core import layout
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.provenance import environment
from audit.core.store import RunDir
from audit.engine.build import graph_of, prepare, run_keys
from audit.engine.context import remember_dataset
from audit.engine.pipeline import STAGES
from audit.engine.scheduler import Scheduler
from audit.engine.serial import Executor, SerialExecutor

log = logging.getLogger(__name__)


def _open_run_dir(out: Path, overwrite: bool) -> RunDir:
    """A new directory, or an earlier run's to resume (--overwrite starts it afresh)."""
    if out.exists() and any(out.iterdir()):
        if not (out / layout.CONFIG).exists():
            raise AuditError(f"--out {out} is not empty and is not a run directory; choose another")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return RunDir(out)


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
    }
    for name in layout.FINAL_OUTPUTS:  # a resumed run's old results must not look final meanwhile
        store.path(name).unlink(missing_ok=True)
    store.write_json(layout.CONFIG, manifest)
    total = time.perf_counter()
    scheduler = Scheduler(config, data, store, graph, run_keys(config, data), executor)
    timings = manifest["timings_s"] = scheduler.timings

    def reused() -> list[str]:  # in the order of the stage list, whatever order they ran in
        return [s.name for s in STAGES if s.name in scheduler.reused]

    def progress() -> None:  # what a killed run shows, and what the report reads
        in_stage_order(timings)
        manifest["reused_stages"] = reused()
        manifest["reused_rows"] = scheduler.reused_rows
        store.write_json(layout.CONFIG, manifest)

    scheduler.on_commit = progress
    try:
        scheduler.execute()
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        store.write_json(layout.CONFIG, manifest)
        raise
    finally:
        executor.close()
    timings["total"] = round(time.perf_counter() - total, 3)
    in_stage_order(timings)
    manifest.update(
        status="complete",
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reused_stages=reused(),
        reused_rows={
            s.name: scheduler.reused_rows[s.name] for s in STAGES if s.name in scheduler.reused_rows
        },
        # what each stage cost when it was computed, in this run or the one it was reused from
        stage_seconds={stage.name: scheduler.seconds(stage.name) for stage in STAGES},
    )
    if scheduler.nodes:
        manifest["task_nodes"] = scheduler.nodes
    if scheduler.peak_gpu_mb:  # MiB per task id, in the graph's order
        ids = [task.id for tasks in graph.tasks.values() for task in tasks]
        order = {task_id: i for i, task_id in enumerate(ids)}
        peaks = sorted(scheduler.peak_gpu_mb.items(), key=lambda kv: order.get(kv[0], len(order)))
        manifest["peak_gpu_mb"] = dict(peaks)
    store.write_json(layout.CONFIG, manifest)
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
