"""The report's plots, each rendered to a PNG data URI (matplotlib, Agg): pure functions of saved
results, so `audit report` redraws them without recomputing anything."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures go straight to bytes
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

DPI = 80


def figure_uri(fig: Figure) -> str:
    """PNG bytes of a figure as a data URI; the figure is closed. No metadata: the same plot
    gives the same bytes on the same matplotlib."""
    from PIL import Image

    fig.tight_layout()
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    # a 64-colour palette keeps line plots legible at a third of the bytes of RGBA
    picture = Image.open(raw).convert("RGB").quantize(colors=64, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not math.isnan(float(value)) else None


def _strongest_attack(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """(AUC, CI low, CI high) of the family whose strongest attack scores highest (each measured
    on its evaluation half), or None."""
    found = [
        (
            _number(row.get(f"{family}_auc")),
            _number(row.get(f"{family}_auc_ci_low")),
            _number(row.get(f"{family}_auc_ci_high")),
        )
        for family in ("mia_release", "mia_model")
    ]
    complete = [
        (a, lo, hi) for a, lo, hi in found if a is not None and lo is not None and hi is not None
    ]
    return max(complete) if complete else None


def tradeoff_figure(rows: list[dict[str, Any]]) -> str | None:
    """Utility against the holdout share (SSIM) and against the strongest membership attack's
    AUC, one point per release (labelled by K) with its 95% CI; chance, the real-data baseline
    and the target model marked."""
    releases = [r for r in rows if r["generator"] not in ("real", "target")]
    real = next((r for r in rows if r["generator"] == "real"), None)
    target = next((r for r in rows if r["generator"] == "target"), None)
    if not releases:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for generator in sorted({r["generator"] for r in releases}):
        mine = [r for r in releases if r["generator"] == generator]
        share = [
            (
                _number(r.get("holdout_share_ssim")),
                _number(r.get("holdout_share_ssim_ci_low")),
                _number(r.get("holdout_share_ssim_ci_high")),
            )
            for r in mine
        ]
        attack = [_strongest_attack(r) or (None, None, None) for r in mine]
        utility = [_number(r.get("utility_acc")) for r in mine]
        for axis, xs in ((left, share), (right, attack)):
            points = [
                (x, lo, hi, y, r)
                for (x, lo, hi), y, r in zip(xs, utility, mine, strict=True)
                if x is not None and lo is not None and hi is not None and y is not None
            ]
            if not points:
                continue
            axis.errorbar(
                [p[0] for p in points],
                [p[3] for p in points],
                xerr=[[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]],
                fmt="o-",
                capsize=3,
                label=f"{generator} (95% CI)",
                zorder=3,
            )
            for x, _lo, _hi, y, r in points:
                label = generator
                if r.get("k") is not None:
                    label = f"K={r['k']}"
                elif r.get("epsilon") is not None:
                    label = f"ε={r['epsilon']:g}"
                axis.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    real_utility = _number(real.get("utility_acc")) if real else None
    for axis in (left, right):
        if real_utility is not None:
            axis.axhline(real_utility, color="grey", ls="--", lw=1, label="real members (utility)")
        axis.set_ylabel("utility: test accuracy of the retrained model")
        axis.set_ylim(0, 1.02)
        axis.set_xlim(0, 1)
        axis.grid(alpha=0.3)
    right.axvline(0.5, color="black", ls=":", lw=1, label="chance")
    chance = _number((real or releases[0]).get("holdout_share_ssim_expected"))
    if chance is not None:  # members / (members + held-out records): the same for every row
        left.axvline(chance, color="black", ls=":", lw=1, label="chance")
    real_share = _number(real.get("holdout_share_ssim")) if real else None
    if real_share is not None:
        left.axvline(real_share, color="grey", ls="-.", lw=1, label="held-out images as a release")
    left.set_xlabel("share of released images whose nearest pool image is a member (SSIM)")
    target_auc = _number(target.get("mia_model_auc")) if target else None
    if target_auc is not None and target is not None:
        right.plot(
            [target_auc],
            [_number(target.get("utility_acc")) or 0],
            "k*",
            ms=10,
            label="the target model itself",
        )
    right.set_xlabel("strongest membership attack: AUC on its evaluation half")
    left.legend(fontsize=8, loc="best")
    right.legend(fontsize=8, loc="best")
    return figure_uri(fig)


def _panel_grid(n: int, *, height: float) -> tuple[Figure, list[Any]]:
    """A figure of n panels, three to a row; the unused cells of the last row are hidden."""
    columns = min(n, 3)
    grid_rows = math.ceil(n / columns)
    fig, axes = plt.subplots(
        grid_rows, columns, figsize=(4.2 * columns, height * grid_rows), squeeze=False
    )
    cells = list(axes.flat)
    for axis in cells[n:]:
        axis.set_visible(False)
    return fig, cells[:n]


def roc_figure(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], title: str) -> str:
    """Log-log ROC curves: one panel per row, one curve per attack.

    panels: row -> attack -> (scores, is_member)."""
    fig, axes = _panel_grid(len(panels), height=3.8)
    for axis, (row, attacks) in zip(axes, panels.items(), strict=False):
        floor = 1.0
        for attack, (scores, is_member) in attacks.items():
            fpr, tpr, _ = roc_curve(is_member, scores)
            floor = min(floor, 0.5 / max(1, int((~is_member.astype(bool)).sum())))
            axis.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), lw=1, label=attack)
        grid = np.logspace(math.log10(floor), 0, 50)
        axis.plot(grid, grid, color="grey", ls="--", lw=1, label="chance")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(floor, 1)
        axis.set_ylim(floor, 1)
        axis.set_title(row, fontsize=10)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=11)
    return figure_uri(fig)


def hcr_figure(models: dict[str, Any]) -> str | None:
    """Per model: the distribution of per-DCT-coefficient HCR bounds at each noise scale (step
    histograms on log10 std), with the decoder's median per-coefficient RMSE at that scale as a
    dashed line of the same colour."""
    entries = {
        row: [s for s in m["scales"] if "hcr_log10_histogram" in s] for row, m in models.items()
    }
    entries = {row: scales for row, scales in entries.items() if scales}
    if not entries:
        return None
    fig, axes = _panel_grid(len(entries), height=3.4)
    for axis, (row, scales) in zip(axes, entries.items(), strict=False):
        for index, scale in enumerate(scales):
            color = f"C{index}"
            histogram = scale["hcr_log10_histogram"]
            edges = np.asarray(histogram["edges"])
            counts = np.asarray(histogram["counts"])
            axis.stairs(counts, edges, color=color, label=f"HCR bound, scale {scale['scale']:g}")
            rmse = _number(scale.get("coefficient_rmse_median"))
            if rmse and rmse > 0:
                axis.axvline(
                    math.log10(rmse), color=color, ls="--", lw=1, label="decoder RMSE (median)"
                )
        axis.set_title(row, fontsize=10)
        axis.set_xlabel("log10 std per DCT coefficient (normalised units)")
        axis.set_ylabel("coefficients")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    return figure_uri(fig)
