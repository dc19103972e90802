"""The end-of-run table: one line per release with what a reader needs first (utility against
the real members', the holdout-relative similarity, the strongest attack, the verdict) and the
baselines beneath. Pure functions over results.json's rows."""

from __future__ import annotations

import textwrap
from typing import Any

from audit.core.layout import row_of
from reports.thresholds import number_or_none

FAMILIES = ("mia_release", "mia_model")
FPRS = ((0.001, "tpr_at_0_1fpr"), (0.01, "tpr_at_1fpr"))  # lowest first


def strongest_attack(row: dict[str, Any]) -> dict[str, Any]:
    """The family whose chosen attack has the highest AUC, that AUC, and its TPR at the lowest
    FPR (0.1%, else 1%) the row's non-members can resolve."""
    aucs = {f: number_or_none(row.get(f"{f}_auc")) for f in FAMILIES}
    scored = [(f, auc) for f, auc in aucs.items() if auc is not None]
    if not scored:
        return {"attack": None, "attack_auc": None, "attack_tpr": None, "attack_fpr": None}
    family, auc = max(scored, key=lambda item: item[1])
    tpr, fpr = None, None
    for rate, suffix in FPRS:
        tpr = number_or_none(row.get(f"{family}_{suffix}"))
        if tpr is not None:
            fpr = rate
            break
    return {
        "attack": f"{family}:{row.get(f'{family}_attack')}",
        "attack_auc": auc,
        "attack_tpr": tpr,
        "attack_fpr": fpr,
    }


def summary_rows(rows: list[dict[str, Any]], passed: dict[str, bool]) -> list[dict[str, Any]]:
    """One dict per release (then the `real` and `target` baselines): utility_acc and its
    ratio to the real members' utility_acc, holdout_share_ssim with its chance level and
    p-value, the suspected copies (the larger copy_count), the strongest attack, and the verdict
    (pass / fail / baseline)."""
    real = next((r for r in rows if r["generator"] == "real"), {})
    real_acc = number_or_none(real.get("utility_acc"))
    out = []
    ordered = [r for r in rows if r["generator"] not in ("real", "target")]
    ordered += [r for r in rows if r["generator"] in ("real", "target")]
    for row in ordered:
        name = row_of(row)
        acc = number_or_none(row.get("utility_acc"))
        baseline = row["generator"] in ("real", "target")
        out.append(
            {
                "release": name,
                "utility_acc": acc,
                "utility_vs_real": acc / real_acc if acc is not None and real_acc else None,
                "holdout_share_ssim": number_or_none(row.get("holdout_share_ssim")),
                "holdout_share_ssim_p": number_or_none(row.get("holdout_share_ssim_p")),
                "holdout_share_ssim_expected": number_or_none(
                    row.get("holdout_share_ssim_expected")
                ),
                "suspected_copies": _most(row, ("copy_count_ssim", "copy_count_haarpsi")),
                **strongest_attack(row),
                "verdict": "baseline"
                if baseline
                else ("pass" if passed.get(name) else "fail" if name in passed else None),
            }
        )
    return out


def _most(row: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    found = [number_or_none(row.get(k)) for k in keys]
    counts = [int(v) for v in found if v is not None]
    return max(counts) if counts else None


def _cell(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def render_summary(rows: list[dict[str, Any]]) -> str:
    """The table as fixed-width text, with a legend."""
    header = (
        *("release", "utility", "vs real", "holdout", "chance", "p", "copies"),
        *("strongest attack", "AUC", "TPR", "at FPR", "verdict"),
    )
    lines = []
    for r in rows:
        lines.append(
            (
                r["release"],
                _cell(r["utility_acc"]),
                _cell(r["utility_vs_real"], ".2f"),
                _cell(r["holdout_share_ssim"]),
                _cell(r["holdout_share_ssim_expected"], ".2f"),
                _cell(r["holdout_share_ssim_p"], ".2g"),
                _cell(r["suspected_copies"]),
                _cell(r["attack"]),
                _cell(r["attack_auc"]),
                _cell(r["attack_tpr"]),
                "n/r" if r["attack_fpr"] is None and r["attack"] else _cell(r["attack_fpr"], ".1%"),
                _cell(r["verdict"]),
            )
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    text = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *lines)
    ]
    text.insert(1, "-" * len(text[0]))
    legend = (
        "utility: test accuracy of ResNet20 retrained on the release (vs real: its ratio to "
        "training on the real members). holdout: share of released images whose nearest image "
        "(SSIM, compared shifted and, where the classes allow, mirrored) among all members and "
        "the held-out records is a member, beside its chance level; p: its permutation p-value. "
        "copies: members with a "
        "suspected copy in the release (the larger of the SSIM and HaarPSI counts). "
        "strongest attack: the membership attack with the highest AUC (0.5 is chance) and its "
        "TPR at the lowest FPR its non-members resolve (n/r: not even 1%). "
        "Columns: docs/columns.md."
    )
    return "\n".join(text) + "\n" + textwrap.fill(legend, width=100)
