"""Assemble the report from a run directory's saved results (no recomputation) and render it.

Used by the run's report stage and by `audit report DIR`; both give the same page for the same
files. The verdict is judged against a thresholds file (the shipped default unless given)."""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.core import layout
from audit.core.layout import row_of
from audit.core.store import RunDir
from reports.figures import hcr_figure, roc_figure, tradeoff_figure
from reports.gallery import (
    PrivateImages,
    copy_panels,
    exposed_panels,
    nearest_panels,
    sample_panels,
)
from reports.html import render_report
from reports.reconstructions import feature_panels, inversion_panels
from reports.thresholds import (
    TESTS,
    Thresholds,
    Verdict,
    check,
    judge_limit,
    judge_test,
    release_values,
)
from reports.verdict import summary_lines


def _roc_panels(store: RunDir, family: str, attacks: dict[str, Any]) -> dict[str, Any]:
    panels: dict[str, Any] = {}
    for row, per_attack in attacks[family]["attacks"].items():
        path = layout.mia_scores(family, row)
        if not store.path(path).exists():
            continue
        saved = store.read_npz(path)
        is_member = saved["is_member"].astype(bool)
        panels[row] = {attack: (saved[f"score_{attack}"], is_member) for attack in per_attack}
    return panels


def per_release_tables(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """One small table per release: each gated metric with its value, limit and outcome."""
    tables = []
    for row in rows:
        if row["generator"] in ("real", "target"):
            continue
        name = row_of(row)
        tables.append(
            {
                "name": name,
                "row": row,
                "verdicts": [v for v in verdicts if v.row == name],
            }
        )
    return tables


def dp_claims(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Each row with a DP claim, by name, with the gate's standing of its claim (judged at the
    gate's family-wise level; the row's own dp_claim_status is at 95%, unadjusted)."""
    gate = {v.row: v for v in verdicts if v.metric == "dp_claim"}
    return [
        {"name": row_of(row), "row": row, "verdict": gate.get(row_of(row))}
        for row in rows
        if row.get("eps_accountant") is not None
    ]


def build_report(
    store: RunDir, results: dict[str, Any], *, private: PrivateImages, thresholds: Thresholds
) -> str:
    manifest = store.read_json(layout.CONFIG)
    releases = store.read_json(layout.GENERATE)["releases"]
    classes = [str(c) for c in results["dataset"]["classes"]]
    members = store.read_npz(layout.SPLIT)["members"]
    verdicts = check(store, results, thresholds)
    tests = [v for v in verdicts if v.is_test and v.metric != "dp_claim"]
    real = next((row for row in results["rows"] if row["generator"] == "real"), None)
    baseline: list[Verdict] = []  # the same checks on held-out images offered as a release
    if real is not None:
        values = release_values(store, real, thresholds.share_ssim_level)
        baseline += [
            judge_limit(real, values, metric, limit)
            for metric, limit in thresholds.limits.items()
            if values[metric] is not None
        ]
        baseline += [
            judge_test(real, name, tests[0].limit, tests[0].n_tests)
            for name in thresholds.tests
            if tests and TESTS[name].p_column in real
        ]
    attacks = results.get("attacks", {})
    figures = {
        "tradeoff": tradeoff_figure(results["rows"]),
        "hcr": hcr_figure(results["features"]["models"]) if "features" in results else None,
    }
    for family, title in (
        ("mia_release", "Attacks on the released images"),
        ("mia_model", "Attacks on the target and the retrained models"),
    ):
        panels = _roc_panels(store, family, attacks) if family in attacks else {}
        figures[f"roc_{family}"] = roc_figure(panels, title) if panels else None
    context = {
        "results": results,
        "manifest": manifest,
        "thresholds": thresholds,
        "verdicts": verdicts,
        "breaches": [v for v in verdicts if not v.passed],
        "summary": summary_lines(verdicts),
        "baseline": baseline,
        "release_tables": per_release_tables(results["rows"], verdicts),
        "dp_claims": dp_claims(results["rows"], verdicts),
        "real_row": real or {},
        "figures": figures,
        "samples": sample_panels(store, releases),
        "copies": copy_panels(store, releases, classes, private),
        "nearest": nearest_panels(store, releases, members, classes, private),
        "exposed": exposed_panels(store, attacks, private),
        "inversion_panels": (
            inversion_panels(store, results["inversion"], classes) if "inversion" in results else []
        ),
        "feature_panels": (
            feature_panels(store, results["features"], private) if "features" in results else []
        ),
        "redacted": private.redacted,
    }
    return render_report(context)


def save_exhibits(store: RunDir, private: PrivateImages, images: np.ndarray) -> None:
    """The private images the report showed, by dataset index, so `audit report` can re-render
    without the dataset. They are private data, like the rest of the run directory."""
    index = np.array(sorted(private.used), dtype=np.int64)
    store.write_npz(layout.EXHIBITS, index=index, images=images[index])
