"""The leakage gate: thresholds from a TOML file, checked against a run's saved results.

Pure functions over results.json and the per-image privacy scores; `audit check` and the
report's verdict both call `check`. Thresholds apply to released rows only: the `real` and
`target` rows are baselines (what an independent draw, or releasing the model, would leak).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from audit.core import layout
from audit.core.errors import AuditError
from audit.core.layout import row_of
from audit.core.store import RunDir

DEFAULT_THRESHOLDS = "default_thresholds.toml"  # shipped in this package, documented inline
BASELINE_ROWS = ("real", "target")

# threshold name -> (is an upper limit, what it limits): absolute levels, each opt-in except
# max_exact_copies (a released image equal to a member is a leak at any level of chance)
METRICS: dict[str, tuple[bool, str]] = {
    "max_exact_copies": (True, "released images within +-2 grey levels of a member everywhere"),
    "max_nn_ssim": (True, "nn_ssim_max"),
    "max_share_ssim_above": (True, "share of released images above share_ssim_level"),
    "max_mia_auc": (True, "strongest membership attack's AUC"),
    "max_tpr_at_1fpr": (True, "strongest membership attack's TPR at 1% FPR"),
    "max_eps_lower": (True, "eps_lower"),
    "min_utility": (False, "utility_acc"),
}


@dataclass(frozen=True)
class Test:
    """A statistical test against the held-out baseline: its p-value column, its statistic and
    what the statistic is, in words."""

    p_column: str
    statistic: str
    what: str
    chance: float | str  # the statistic when nothing is memorised, or the column that has it
    # run only on rows that make a formal DP claim (eps_accountant, dp_formal)
    dp_claims_only: bool = False


TESTS: dict[str, Test] = {
    **{
        f"holdout_share_{m}": Test(
            f"holdout_share_{m}_p",
            f"holdout_share_{m}",
            f"share of released images whose nearest ({label}, under mirror and shifts) of all "
            "members and the held-out records is a member",
            f"holdout_share_{m}_expected",
        )
        for m, label in (("ssim", "SSIM"), ("haarpsi", "HaarPSI"))
    },
    **{
        f"copy_count_{m}": Test(
            f"copy_count_{m}_p",
            f"copy_count_{m}",
            f"members with a suspected copy: released images nearer a member ({label}), "
            "relative to their nearest held-out record, than any private record to the others",
            f"copy_count_{m}_expected",
        )
        for m, label in (("ssim", "SSIM"), ("haarpsi", "HaarPSI"))
    },
    "mia_release": Test(
        "mia_release_p",
        "mia_release_auc",
        "AUC of the strongest attack on the released images (chosen on half the candidates)",
        0.5,
    ),
    "mia_model": Test(
        "mia_model_p",
        "mia_model_auc",
        "AUC of the strongest attack on the model retrained on the release (chosen on half the "
        "candidates)",
        0.5,
    ),
    "dp_claim": Test(
        "dp_claim_p",
        "eps_audit",
        "the one-run canary audit's lower bound on epsilon (95%), against the row's claim "
        "(H0: the training is (epsilon, delta)-DP at its accountant's epsilon)",
        "dp_claim_audited",
        dp_claims_only=True,
    ),
}
# parameters, not limits themselves. dp_claim_alpha_share: the part of alpha the DP-claim tests
# share when any runs (weighted Bonferroni: the family-wise error stays <= alpha). A one-run
# audit's p-value cannot fall below a floor of order delta (Steinke et al.'s delta term: about
# 8e-4 at delta 1e-5 with the report's three scores), so an even split over 70 tests would leave
# no claim refutable; the memorisation tests keep the rest.
SETTINGS = {"share_ssim_level": 0.9, "alpha": 0.05, "dp_claim_alpha_share": 0.25}
LEAKAGE_METRICS = tuple(name for name in (*METRICS, *TESTS) if name != "min_utility")


@dataclass(frozen=True)
class Thresholds:
    limits: dict[str, float]  # metric name -> limit
    tests: tuple[str, ...]  # statistical tests against the held-out baseline
    alpha: float  # family-wise significance level over every test the gate runs on a run
    share_ssim_level: float
    source: str  # the file they came from, for messages and the report
    dp_claim_alpha_share: float = SETTINGS["dp_claim_alpha_share"]


@dataclass(frozen=True)
class Verdict:
    row: str
    metric: str  # a METRICS limit or a TESTS name
    value: float | None  # the measured value, or the test's p-value; None: not measured
    limit: float  # the limit, or the corrected level: its part of alpha / n_tests
    passed: bool
    statistic: float | None = None  # a test's statistic (a share or an AUC)
    chance: float | None = None  # the statistic when nothing is memorised
    ci: tuple[float, float] | None = None
    # how many tests share its part of alpha: the DP-claim tests, or all the others
    n_tests: int = 0
    alpha: float = 0.0  # the gate's whole family-wise alpha (its part: limit x n_tests)
    # a DP claim's standing: refuted, not refuted, uninformative (even a perfect attack could
    # not reach this level), not audited (no --canaries), not formal (no guarantee to check)
    status: str | None = None

    @property
    def is_test(self) -> bool:
        return self.metric in TESTS

    def line(self) -> str:
        if self.metric == "dp_claim":
            return self._claim_line()
        if self.is_test:
            test = TESTS[self.metric]
            if self.value is None:
                return f"{self.row}: {self.metric} not measured ({test.what}); cannot pass the gate"
            ci = f", 95% CI {self.ci[0]:.3g}-{self.ci[1]:.3g}" if self.ci else ""
            sign = ">=" if self.passed else "<"
            return (
                f"{self.row}: {self.metric} = {short_number(self.statistic)} ({test.what}; chance "
                f"{short_number(self.chance)}{ci}), p = {self.value:.2g} {sign} {self.limit:.2g} "
                f"({self.family()})"
            )
        upper, what = METRICS[self.metric]
        if self.value is None:
            return f"{self.row}: {self.metric} not measured ({what}); cannot pass the gate"
        sign = ">" if upper else "<"
        if self.passed:
            sign = "<=" if upper else ">="
        return f"{self.row}: {what} = {self.value:.4g} {sign} {self.metric} = {self.limit:g}"

    def family(self) -> str:
        """Where the level comes from: alpha, or its share, over the tests sharing it."""
        part = self.limit * self.n_tests
        kind = "DP-claim tests" if self.metric == "dp_claim" else "tests"
        if self.alpha and abs(part - self.alpha) > 1e-12:
            return f"alpha {self.alpha:g} x {part / self.alpha:.2g} / {self.n_tests} {kind}"
        return f"alpha {part:g} / {self.n_tests} {kind}"

    def _claim_line(self) -> str:
        claim = f"{self.row}: DP claim epsilon {short_number(self.chance)}"
        if self.status == "not audited":
            return f"{claim} not audited (run with --canaries M); taken on trust"
        if self.status and self.status.startswith("not formal"):
            refuted = "; the audit refutes it at 95%" if "refuted" in self.status else ""
            return f"{claim} is not a formal guarantee (dp_formal false); not checked{refuted}"
        found = (
            f"eps_audit {short_number(self.statistic)} (95% lower bound), "
            f"p = {short_number(self.value)} vs "
            f"{self.limit:.2g} ({self.family()})"
        )
        if self.status == "uninformative":
            return (
                f"{claim} uninformative: even a perfect attack with these canaries could not "
                f"refute it at this level ({found})"
            )
        return f"{claim} {self.status} by the canary audit: {found}"


def short_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Read a thresholds file (the shipped default when path is None); AuditError on a missing
    file, malformed TOML, an unknown metric or test name or a value of the wrong type."""
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
    table = dict(document.get("thresholds", document))
    if not isinstance(table, dict):
        raise AuditError(f"thresholds file {source}: [thresholds] must be a table")
    tests = table.pop("tests", [])
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise AuditError(f"thresholds file {source}: tests must be a list of test names")
    unknown_tests = sorted(set(tests) - set(TESTS))
    if unknown_tests:
        raise AuditError(
            f"thresholds file {source}: unknown test {', '.join(unknown_tests)}; "
            f"known: {', '.join(TESTS)}"
        )
    unknown = sorted(set(table) - set(METRICS) - set(SETTINGS))
    if unknown:
        raise AuditError(
            f"thresholds file {source}: unknown metric {', '.join(unknown)}; "
            f"known: {', '.join([*METRICS, *SETTINGS, 'tests'])}"
        )
    values: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise AuditError(f"thresholds file {source}: {name} must be a number, got {value!r}")
        values[name] = float(value)
    level = values.pop("share_ssim_level", SETTINGS["share_ssim_level"])
    alpha = values.pop("alpha", SETTINGS["alpha"])
    dp_share = values.pop("dp_claim_alpha_share", SETTINGS["dp_claim_alpha_share"])
    if not values and not tests:
        known = ", ".join([*METRICS, "tests"])
        raise AuditError(f"thresholds file {source} sets no thresholds; known: {known}")
    if not 0 <= level <= 1:
        raise AuditError(f"thresholds file {source}: share_ssim_level must lie in [0, 1]")
    if not 0 < alpha < 1:
        raise AuditError(f"thresholds file {source}: alpha must lie in (0, 1)")
    if not 0 < dp_share < 1:
        raise AuditError(f"thresholds file {source}: dp_claim_alpha_share must lie in (0, 1)")
    return Thresholds(
        limits=values,
        tests=tuple(dict.fromkeys(tests)),
        alpha=alpha,
        share_ssim_level=level,
        source=source,
        dp_claim_alpha_share=dp_share,
    )


def _worst(row: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    found = [float(row[k]) for k in keys if _is_number(row.get(k))]
    return max(found) if found else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def release_values(store: RunDir, row: dict[str, Any], share_level: float) -> dict[str, Any]:
    """What each limit measures on one released row, from results.json and privacy/<row>.npz."""
    name = row_of(row)
    share: float | None = None
    if store.path(layout.privacy_scores(name)).exists():
        ssim = store.read_npz(layout.privacy_scores(name))["ssim_values"]
        share = float((ssim > share_level).mean()) if len(ssim) else None
    return {
        "max_exact_copies": row.get("exact_copies"),
        "max_nn_ssim": row.get("nn_ssim_max"),
        "max_share_ssim_above": share,
        "max_mia_auc": _worst(row, ("mia_release_auc", "mia_model_auc")),
        "max_tpr_at_1fpr": _worst(row, ("mia_release_tpr_at_1fpr", "mia_model_tpr_at_1fpr")),
        "max_eps_lower": row.get("eps_lower"),
        "min_utility": row.get("utility_acc"),
    }


def number_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def judge_limit(row: dict[str, Any], values: dict[str, Any], metric: str, limit: float) -> Verdict:
    """One limit on one row, given release_values of that row; fails closed."""
    value = values[metric]
    measured = _is_number(value)
    upper = METRICS[metric][0]
    passed = measured and (value <= limit if upper else value >= limit)
    return Verdict(
        row=row_of(row),
        metric=metric,
        value=float(value) if measured else None,
        limit=limit,
        passed=bool(passed),
    )


def makes_formal_claim(row: dict[str, Any]) -> bool:
    """A DP row whose epsilon is a theorem (the published DPD-fVAE variant's is not)."""
    return _is_number(row.get("eps_accountant")) and row.get("dp_formal", True) is not False


def claim_standing(row: dict[str, Any]) -> str | None:
    """Why a DP row's claim is not tested: not formal, or not audited; None where it is."""
    if not _is_number(row.get("eps_accountant")):
        return None
    if not makes_formal_claim(row):  # informative only: "not formal; refuted" where it is
        status = row.get("dp_claim_status")
        return (
            status if isinstance(status, str) and status.startswith("not formal") else "not formal"
        )
    if not _is_number(row.get("dp_claim_p")):
        return "not audited"
    return None


def judge_test(row: dict[str, Any], test: str, level: float, n_tests: int) -> Verdict:
    """One statistical test on one released row at the corrected level; fails closed (a DP
    claim that was not audited, or is not formal, passes with that status: nothing is tested)."""
    spec = TESTS[test]
    p_value = number_or_none(row.get(spec.p_column))
    low = number_or_none(row.get(f"{spec.statistic}_ci_low"))
    high = number_or_none(row.get(f"{spec.statistic}_ci_high"))
    chance = spec.chance if isinstance(spec.chance, float) else number_or_none(row.get(spec.chance))
    status = None
    if spec.dp_claims_only:
        chance = number_or_none(row.get("eps_accountant")) if chance is None else chance
        status = claim_standing(row)
        if status is not None:
            return Verdict(row_of(row), test, None, level, True, chance=chance, status=status)
        p_min = number_or_none(row.get("dp_claim_p_min"))
        if p_value is not None and p_value < level:
            status = "refuted"
        elif p_min is not None and p_min >= level:
            status = "uninformative"
        else:
            status = "not refuted"
    return Verdict(
        row=row_of(row),
        metric=test,
        value=p_value,
        limit=level,
        passed=p_value is not None and p_value >= level,
        statistic=number_or_none(row.get(spec.statistic)),
        chance=chance,
        ci=(low, high) if low is not None and high is not None else None,
        n_tests=n_tests,
        status=status,
    )


def check(
    store: RunDir, results: dict[str, Any], thresholds: Thresholds, *, metrics: tuple[str, ...] = ()
) -> list[Verdict]:
    """One verdict per (released row, threshold or test); metrics restricts which apply. The
    tests share one family-wise level alpha, weighted Bonferroni: the DP-claim tests (one per
    audited formal DP row) share dp_claim_alpha_share x alpha, the others (every memorisation
    test on every released row) the rest; either part takes all of alpha when the other is
    empty."""
    released = [row for row in results["rows"] if row["generator"] not in BASELINE_ROWS]
    tests = [t for t in thresholds.tests if not metrics or t in metrics]

    def applies(row: dict[str, Any], test: str) -> bool:
        return not TESTS[test].dp_claims_only or _is_number(row.get("eps_accountant"))

    def runs(row: dict[str, Any], test: str) -> bool:
        return applies(row, test) and not (
            TESTS[test].dp_claims_only and claim_standing(row) is not None
        )

    n_claims = sum(runs(row, "dp_claim") for row in released if "dp_claim" in tests)
    n_others = sum(runs(row, t) for row in released for t in tests if t != "dp_claim")
    share = thresholds.dp_claim_alpha_share if n_claims and n_others else float(n_claims > 0)
    alphas = {True: thresholds.alpha * share, False: thresholds.alpha * (1 - share)}
    counts = {True: n_claims, False: n_others}

    def judged(row: dict[str, Any], test: str) -> Verdict:
        claim = test == "dp_claim"
        n = counts[claim]
        verdict = judge_test(row, test, alphas[claim] / max(n, 1), n)
        return dataclasses.replace(verdict, alpha=thresholds.alpha)

    verdicts: list[Verdict] = []
    for row in released:
        values = release_values(store, row, thresholds.share_ssim_level)
        verdicts.extend(
            judge_limit(row, values, metric, limit)
            for metric, limit in thresholds.limits.items()
            if not metrics or metric in metrics
        )
        verdicts.extend(judged(row, test) for test in tests if applies(row, test))
    return verdicts
