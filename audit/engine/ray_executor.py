"""`--executor ray`: each task of the graph a Ray task (the optional `ray` extra).

Workers import this package and read and write the run directory, so on a cluster every node
needs the same install and the run directory (and --data-root) at the same path on a shared
filesystem. A task asks for `threads` CPUs (torch uses that many threads in it, as the serial
executor does, so both give the same bytes) and, with --device cuda, one GPU. Ray retries a task
whose worker or node died; its files are written atomically, so the retry starts clean and gives
the same bytes. An error raised by the task itself is not retried: it is raised here.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from audit.core.errors import AuditError
from audit.engine.serial import Outcome, TaskSpec, run_task

log = logging.getLogger(__name__)

RETRIES = 3  # attempts after a worker or node failure


def _ray_task(spec: TaskSpec) -> Outcome:
    if not logging.getLogger().handlers:  # a fresh worker: its log lines reach the driver
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_task(spec)


def _check_reachable(address: str) -> None:
    """A host:port that does not answer fails now, in one line: ray.init would retry for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", ray://...: Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise AuditError(f"--ray-address {address}: no Ray cluster answers there ({exc})") from exc


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise AuditError(
                '--executor ray needs Ray: pip install -e ".[ray]" (or pip install ray)'
            ) from exc
        self.ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave here
        self.owned = not ray.is_initialized()
        if self.owned:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                _check_reachable(address)
                options["address"] = address
            else:  # a cluster of this machine only: bind to loopback
                options["num_cpus"] = num_cpus
                options["_node_ip_address"] = "127.0.0.1"
            try:
                ray.init(**options)
            except ConnectionError as exc:
                raise AuditError(f"--ray-address {address}: cannot connect ({exc})") from exc
        self.remote = ray.remote(_ray_task)
        self.in_flight: dict[Any, TaskSpec] = {}

    def submit(self, spec: TaskSpec) -> None:
        options: dict[str, Any] = {
            "num_cpus": spec.config.threads or 1,
            "max_retries": RETRIES,
            "retry_exceptions": False,
        }
        if spec.config.device == "cuda" and spec.task.device:
            options["num_gpus"] = 1
        ref = self.remote.options(name=spec.task.id, **options).remote(spec)
        self.in_flight[ref] = spec

    def wait(self) -> tuple[TaskSpec, Outcome]:
        ray = self.ray
        done, _ = ray.wait(list(self.in_flight), num_returns=1)
        spec = self.in_flight.pop(done[0])
        try:
            return spec, ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):  # the task's own error, e.g. an AuditError
                raise cause from None
            raise

    def close(self) -> None:
        for ref in self.in_flight:
            self.ray.cancel(ref, force=True)
        self.in_flight.clear()
        if self.owned:
            self.ray.shutdown()
