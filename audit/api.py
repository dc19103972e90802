"""The Python API: what `audit run` and `audit check` do, as functions for a notebook or a script.
The command line (audit/cli.py) is a thin layer over these.

    import audit
    config = audit.configure(preset="smoke", out="runs/first")   # or config_file="audit.toml"
    run_dir = audit.run_audit(config)
    results = audit.load_results(run_dir)                       # one row per release
    verdict = audit.verdict(run_dir)                            # verdict.passed, .releases
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.core.config import RunConfig, build_config, load_settings, merge_settings, typed_settings
from audit.core.errors import AuditError

if TYPE_CHECKING:
    import pandas as pd


def configure(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    **settings: Any,
) -> RunConfig:
    """The resolved, validated run configuration: the preset's defaults, then config_file (a
    TOML file in config.json's names), then overrides (the same names, nested: the CLI passes
    its flags here), then **settings (`n_synthetic=50`, `bn={"lr": 0.05}`); None is "not given".
    Without `out`, run_audit picks runs/<time>-<config digest>."""
    from_file = load_settings(str(config_file)) if config_file is not None else None
    typed_settings(merge_settings(overrides, settings), "audit.configure")
    return build_config(from_file, overrides, settings)


def run_audit(
    config: RunConfig,
    *,
    overwrite: bool = False,
    executor: str = "serial",
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    argv: list[str] | None = None,
) -> Path:
    """Run (or resume) every task of config, in config.out (runs/<time>-<config digest> when
    empty); returns the run directory, whose results.json, results.csv and report.html exist
    only when everything succeeded. executor "ray" runs the tasks on a Ray cluster (ray_address,
    or a local one bound to loopback): same bytes."""
    from audit.engine.driver import execute

    if not config.out:  # the digest ignores where results go
        out = f"runs/{dt.datetime.now():%Y%m%d-%H%M%S}-{config.digest()[:8]}"
        config = dataclasses.replace(config, out=out)
    if executor not in ("serial", "ray"):
        raise AuditError(f"executor must be serial or ray, got {executor!r}")
    if executor != "ray" and (ray_address or ray_cpus):
        raise AuditError("--ray-address and --ray-cpus need --executor ray")
    runner = None
    if executor == "ray":
        from audit.engine.ray_executor import RayExecutor

        runner = RayExecutor(ray_address, ray_cpus)
    # config.json's "command": the CLI passes its argv; from Python, say where the run came from
    argv = argv if argv is not None else ["(audit.run_audit from Python; settings: config)"]
    return execute(config, overwrite=overwrite, argv=argv, executor=runner)


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """A finished run's results as a DataFrame: one row per release plus the `real` and `target`
    baselines, the columns of docs/columns.md (reports/columns.py), unmeasured cells NaN."""
    import pandas as pd

    from reports.results import columns
    from reports.verdict import load_run_results

    _, results = load_run_results(run_dir)
    rows = results["rows"]
    return pd.DataFrame(rows, columns=columns(rows))


@dataclass(frozen=True)
class AuditVerdict:
    """The gate's judgement of a finished run: passed overall, per release, and the document
    `audit check --json` prints (every check with its value, limit or p-value and level)."""

    passed: bool
    releases: dict[str, bool]
    failures: tuple[str, ...]  # one line per failed check
    thresholds: str  # the file judged by
    document: dict[str, Any]

    def __bool__(self) -> bool:
        return self.passed


def verdict(run_dir: str | Path, thresholds: str | Path | None = None) -> AuditVerdict:
    """Judge a finished run by a thresholds file (the shipped default when None)."""
    from reports.verdict import gate_run, verdict_document

    limits, verdicts = gate_run(run_dir, thresholds)
    if not verdicts:
        raise AuditError(f"{run_dir}: no released rows to check")
    document = verdict_document(run_dir, limits, verdicts)
    return AuditVerdict(
        passed=document["passed"],
        releases={row: entry["passed"] for row, entry in document["releases"].items()},
        failures=tuple(v.line() for v in verdicts if not v.passed),
        thresholds=limits.source,
        document=document,
    )


def summary(run_dir: str | Path, thresholds: str | Path | None = None) -> pd.DataFrame:
    """The end-of-run table `audit run` prints: per release its utility against the real
    members', its holdout-relative similarity, its strongest attack and the verdict."""
    import pandas as pd

    from reports.summary import summary_rows
    from reports.thresholds import check, load_thresholds
    from reports.verdict import load_run_results, passed_by_release

    limits = load_thresholds(thresholds)
    store, results = load_run_results(run_dir)
    passed = passed_by_release(check(store, results, limits))
    return pd.DataFrame(summary_rows(results["rows"], passed))
