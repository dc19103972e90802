"""The gate's verdict in words and as a document: the end-of-run lines, `audit check --json`
(VERDICT_SCHEMA_VERSION), the pass/fail of each release, and the entry points that read a run
directory and check it (`gate_run`, the pytest plugin's `assert_within_thresholds`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from audit.core import layout
from audit.core.errors import AuditError
from audit.core.store import RunDir
from reports.thresholds import (
    LEAKAGE_METRICS,
    METRICS,
    Thresholds,
    Verdict,
    check,
    load_thresholds,
    short_number,
)


def summary_lines(verdicts: list[Verdict]) -> list[str]:
    """One line per released row: PASS and what held, or FAIL with each reason."""
    lines = []
    for row in dict.fromkeys(v.row for v in verdicts):
        mine = [v for v in verdicts if v.row == row]
        failed = [v for v in mine if not v.passed]
        if failed:
            lines.append(f"FAIL {row}: " + _suspected(mine) + "; ".join(map(_reason, failed)))
            continue
        held = [_held(v) for v in mine if not v.is_test]
        held += [_claim_held(v) for v in mine if v.metric == "dp_claim"]
        tests = [v for v in mine if v.is_test and v.metric != "dp_claim"]
        if tests:
            smallest = min(tests, key=lambda v: v.value if v.value is not None else 0.0)
            held.append(
                f"none of {len(tests)} tests finds more memorisation than held-out records show "
                f"(smallest p = {smallest.value:.2g}, {smallest.metric}; "
                f"level {smallest.limit:.2g})"
            )
        lines.append(f"PASS {row}: " + "; ".join(held))
    return lines


def suspected_copies(verdicts: list[Verdict]) -> tuple[int, float] | None:
    """(members with a suspected copy, images expected to stand out by chance) from the copy
    test that found most, when a copy test failed; None otherwise (by chance about n / n_cal
    released images stand out, which is no finding)."""
    failed = [
        v
        for v in verdicts
        if v.metric.startswith("copy_count_") and not v.passed and v.statistic is not None
    ]
    if not failed:
        return None
    worst = max(failed, key=lambda v: v.statistic or 0)
    return int(worst.statistic or 0), float(worst.chance or 0.0)


def _suspected(verdicts: list[Verdict]) -> str:
    found = suspected_copies(verdicts)
    if found is None:
        return ""
    count, chance = found
    return (
        f"{count} suspected cop{'y' if count == 1 else 'ies'} of members ({chance:.2g} "
        "expected by chance); "
    )


def _claim_held(v: Verdict) -> str:
    claim = f"DP claim epsilon {short_number(v.chance)}"
    if v.status == "not audited":
        return f"{claim} not audited (no --canaries)"
    if v.status == "not formal":
        return f"{claim} not a formal guarantee, not checked"
    if v.status == "not formal; refuted":
        return f"{claim} not a formal guarantee, not checked (the audit refutes it at 95%)"
    if v.status == "uninformative":
        return f"{claim} beyond what the canary audit could refute (uninformative)"
    return (
        f"{claim} not refuted by the canary audit (p = {short_number(v.value)}; "
        f"eps_audit {short_number(v.statistic)})"
    )


def _held(v: Verdict) -> str:
    if v.metric == "max_exact_copies" and v.limit == 0:
        return "no exact copy of a member"
    sign = "<=" if METRICS[v.metric][0] else ">="
    return f"{v.metric}: {v.value:.4g} {sign} {v.limit:g}"


def _reason(v: Verdict) -> str:
    if v.metric == "dp_claim":
        return (
            f"DP claim epsilon {short_number(v.chance)} refuted by the canary audit (eps_audit "
            f"{short_number(v.statistic)}, p = {short_number(v.value)})"
        )
    if v.value is None:
        return f"{v.metric} not measured"
    if v.metric.startswith("copy_count_") and v.statistic is not None:
        return (
            f"{v.metric}: {int(v.statistic)} members with a suspected copy "
            f"({short_number(v.chance)} "
            f"released images expected to stand out by chance, p = {v.value:.2g})"
        )
    if v.is_test:
        chance = short_number(v.chance)
        return f"{v.metric} {short_number(v.statistic)} (chance {chance}, p = {v.value:.2g})"
    if v.metric == "max_exact_copies":
        return f"{v.value:g} exact cop{'y' if v.value == 1 else 'ies'} of members"
    return f"{v.metric}: {v.value:.4g} beyond {v.limit:g}"


def load_run_results(run_dir: str | Path) -> tuple[RunDir, dict[str, Any]]:
    """A finished run's directory and results.json; AuditError if there is none."""
    store = RunDir(run_dir)
    if not store.root.is_dir():
        raise AuditError(f"no run directory at {run_dir}")
    try:
        status = store.read_json(layout.CONFIG).get("status")
        results = store.read_json(layout.RESULTS)
    except FileNotFoundError as exc:
        raise AuditError(f"{run_dir} is not a finished run: no {Path(exc.filename).name}") from None
    except ValueError as exc:
        raise AuditError(f"{run_dir}: corrupt results or config.json: {exc}") from None
    if status != "complete":
        raise AuditError(f"{run_dir}: the run is {status!r}, not complete (see config.json)")
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise AuditError(f"{run_dir}/results.json has no rows")
    from reports.columns import SCHEMA_VERSION

    version = results.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise AuditError(
            f"{run_dir}/results.json has schema version {version}; this synthaudit reads "
            f"{SCHEMA_VERSION}: run the same `audit run` command again to rewrite it"
        )
    return store, results


VERDICT_SCHEMA_VERSION = 2


def passed_by_release(verdicts: list[Verdict]) -> dict[str, bool]:
    """Whether each released row passed every check it got."""
    passed: dict[str, bool] = {}
    for v in verdicts:
        passed[v.row] = passed.get(v.row, True) and v.passed
    return passed


def verdict_document(
    run_dir: str | Path, thresholds: Thresholds, verdicts: list[Verdict]
) -> dict[str, Any]:
    """`audit check --json`: per release, whether it passed and every check behind it: a limit
    (metric, value, limit) or a test against the held-out baseline (p-value, the Bonferroni
    level it must stay above, the statistic, its chance level and CI). Values not measured (or
    NaN) are null, so jq and pandas read the document as written."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, tuple | list):
            return [clean(v) for v in value]
        return value

    passed = passed_by_release(verdicts)
    releases: dict[str, Any] = {}
    for v in verdicts:
        entry = releases.setdefault(v.row, {"passed": passed[v.row], "checks": []})
        check: dict[str, Any]
        if v.is_test:  # a test's value is its p-value, its limit the corrected level
            tested = v.metric != "dp_claim" or v.status not in ("not audited", "not formal")
            level = v.limit if tested else None  # a claim not tested has no level
            check = {"kind": "test", "test": v.metric, "p_value": v.value, "level": level}
            check |= {"statistic": v.statistic, "chance": v.chance, "ci": v.ci}
            check |= {
                "n_tests": v.n_tests if tested else None,
                # the part of alpha its n_tests share (weighted Bonferroni)
                "alpha_part": v.limit * v.n_tests if tested else None,
            }
            if v.status is not None:
                check |= {"status": v.status}
        else:
            check = {"kind": "limit", "metric": v.metric, "value": v.value, "limit": v.limit}
        entry["checks"].append({k: clean(x) for k, x in check.items()} | {"passed": v.passed})
    return {
        "schema_version": VERDICT_SCHEMA_VERSION,
        "run": str(run_dir),
        "thresholds": thresholds.source,
        "alpha": thresholds.alpha,
        "dp_claim_alpha_share": thresholds.dp_claim_alpha_share,
        "passed": all(v.passed for v in verdicts),
        "releases": releases,
    }


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
