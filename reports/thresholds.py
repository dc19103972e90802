"""The leakage gate: thresholds from a TOML file, checked against a run's saved results.

Pure functions over results.json and the per-image privacy scores; `audit check` and the
report's verdict both call `check`. Thresholds apply to released rows only: the `real` and
`target` rows are baselines (what an independent draw, or releasing the model, would leak).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from audit.errors import AuditError
from audit.store import RunDir, row_name

DEFAULT_THRESHOLDS = "default_thresholds.toml"  # shipped in this package, documented inline
BASELINE_ROWS = ("real", "target")

# threshold name -> (is an upper limit, what it limits)
METRICS: dict[str, tuple[bool, str]] = {
    "max_nn_ssim": (True, "nn_ssim_max"),
    "max_share_ssim_above": (True, "share of released images above share_ssim_level"),
    "max_mia_auc": (True, "worst membership attack AUC"),
    "max_tpr_at_1fpr": (True, "worst membership attack TPR at 1% FPR"),
    "max_eps_lower": (True, "eps_lower"),
    "min_utility": (False, "utility_acc"),
}
SETTINGS = {"share_ssim_level": 0.9}  # parameters of a metric, not limits themselves
LEAKAGE_METRICS = tuple(name for name in METRICS if name != "min_utility")


@dataclass(frozen=True)
class Thresholds:
    limits: dict[str, float]  # metric name -> limit
    share_ssim_level: float
    source: str  # the file they came from, for messages and the report


@dataclass(frozen=True)
class Verdict:
    row: str
    metric: str
    value: float | None  # None: the run did not measure it (fails closed)
    limit: float
    passed: bool

    def line(self) -> str:
        upper, what = METRICS[self.metric]
        if self.value is None:
            return f"{self.row}: {self.metric} not measured ({what}); cannot pass the gate"
        sign = ">" if upper else "<"
        if self.passed:
            sign = "<=" if upper else ">="
        return f"{self.row}: {what} = {self.value:.4g} {sign} {self.metric} = {self.limit:g}"


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Read a thresholds file (the shipped default when path is None); AuditError on a missing
    file, malformed TOML, an unknown metric name or a value that is not a number."""
    if path is None:
        text = resources.files("reports").joinpath(DEFAULT_THRESHOLDS).read_text()
        source = f"the shipped {DEFAULT_THRESHOLDS}"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuditError(f"cannot read thresholds file {path}: {exc.strerror}") from None
        source = str(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"thresholds file {source} is not valid TOML: {exc}") from None
    table = document.get("thresholds", document)
    if not isinstance(table, dict):
        raise AuditError(f"thresholds file {source}: [thresholds] must be a table")
    unknown = sorted(set(table) - set(METRICS) - set(SETTINGS))
    if unknown:
        raise AuditError(
            f"thresholds file {source}: unknown metric {', '.join(unknown)}; "
            f"known: {', '.join([*METRICS, *SETTINGS])}"
        )
    values: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise AuditError(f"thresholds file {source}: {name} must be a number, got {value!r}")
        values[name] = float(value)
    level = values.pop("share_ssim_level", SETTINGS["share_ssim_level"])
    if not values:
        known = ", ".join(METRICS)
        raise AuditError(f"thresholds file {source} sets no thresholds; known: {known}")
    if not 0 <= level <= 1:
        raise AuditError(f"thresholds file {source}: share_ssim_level must lie in [0, 1]")
    return Thresholds(limits=values, share_ssim_level=level, source=source)


def _worst(row: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    found = [float(row[k]) for k in keys if _is_number(row.get(k))]
    return max(found) if found else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def release_values(store: RunDir, row: dict[str, Any], share_level: float) -> dict[str, Any]:
    """What each metric measures on one released row, from results.json and privacy/<row>.npz."""
    name = row_name(row["generator"], row["k"])
    share: float | None = None
    if store.path(f"privacy/{name}.npz").exists():
        ssim = store.read_npz(f"privacy/{name}.npz")["ssim_values"]
        share = float((ssim > share_level).mean()) if len(ssim) else None
    return {
        "max_nn_ssim": row.get("nn_ssim_max"),
        "max_share_ssim_above": share,
        "max_mia_auc": _worst(row, ("mia_release_auc", "mia_model_auc")),
        "max_tpr_at_1fpr": _worst(row, ("mia_release_tpr_at_1fpr", "mia_model_tpr_at_1fpr")),
        "max_eps_lower": row.get("eps_lower"),
        "min_utility": row.get("utility_acc"),
    }


def check(
    store: RunDir, results: dict[str, Any], thresholds: Thresholds, *, metrics: tuple[str, ...] = ()
) -> list[Verdict]:
    """One verdict per (released row, threshold); metrics restricts which thresholds apply."""
    verdicts = []
    for row in results["rows"]:
        if row["generator"] in BASELINE_ROWS:
            continue
        values = release_values(store, row, thresholds.share_ssim_level)
        for metric, limit in thresholds.limits.items():
            if metrics and metric not in metrics:
                continue
            value = values[metric]
            measured = _is_number(value)
            upper = METRICS[metric][0]
            passed = measured and (value <= limit if upper else value >= limit)
            verdicts.append(
                Verdict(
                    row=row_name(row["generator"], row["k"]),
                    metric=metric,
                    value=float(value) if measured else None,
                    limit=limit,
                    passed=bool(passed),
                )
            )
    return verdicts


def load_run_results(run_dir: str | Path) -> tuple[RunDir, dict[str, Any]]:
    """A finished run's directory and results.json; AuditError if there is none."""
    store = RunDir(run_dir)
    if not store.root.is_dir():
        raise AuditError(f"no run directory at {run_dir}")
    try:
        status = store.read_json("config.json").get("status")
        results = store.read_json("results.json")
    except FileNotFoundError as exc:
        raise AuditError(f"{run_dir} is not a finished run: no {Path(exc.filename).name}") from None
    except ValueError as exc:
        raise AuditError(f"{run_dir}: corrupt results or config.json: {exc}") from None
    if status != "complete":
        raise AuditError(f"{run_dir}: the run is {status!r}, not complete (see config.json)")
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise AuditError(f"{run_dir}/results.json has no rows")
    return store, results


def gate_run(
    run_dir: str | Path, thresholds: str | Path | None = None, metrics: tuple[str, ...] = ()
) -> tuple[Thresholds, list[Verdict]]:
    """The thresholds (the shipped default when None) and a finished run's verdicts under them:
    what `audit check` and `assert_within_thresholds` both judge by."""
    limits = load_thresholds(thresholds)
    store, results = load_run_results(run_dir)
    return limits, check(store, results, limits, metrics=metrics)


def assert_within_thresholds(
    run_dir: str | Path,
    thresholds: str | Path | None = None,
    *,
    leakage_only: bool = False,
) -> list[Verdict]:
    """For your own CI: raise AssertionError listing every breach of a finished run, or return
    the verdicts. leakage_only skips min_utility (tiny test runs learn nothing useful)."""
    limits, verdicts = gate_run(run_dir, thresholds, LEAKAGE_METRICS if leakage_only else ())
    if not verdicts:
        raise AssertionError(f"{run_dir}: no released rows to check")
    breaches = [v.line() for v in verdicts if not v.passed]
    if breaches:
        raise AssertionError(
            f"{len(breaches)} leakage threshold breach(es) ({limits.source}):\n"
            + "\n".join(breaches)
        )
    return verdicts
