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


def tradeoff_figure(rows: list[dict[str, Any]]) -> str | None:
    """Utility against nearest-member SSIM and against the worst attack's TPR at 1% FPR, one
    point per release (labelled by K), the real-data baseline marked."""
    releases = [r for r in rows if r["generator"] not in ("real", "target")]
    real = next((r for r in rows if r["generator"] == "real"), None)
    target = next((r for r in rows if r["generator"] == "target"), None)
    if not releases:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for generator in sorted({r["generator"] for r in releases}):
        mine = [r for r in releases if r["generator"] == generator]
        ssim = [_number(r.get("nn_ssim_mean")) for r in mine]
        tpr = [
            max(
                (
                    v
                    for v in (
                        _number(r.get("mia_release_tpr_at_1fpr")),
                        _number(r.get("mia_model_tpr_at_1fpr")),
                    )
                    if v is not None
                ),
                default=None,
            )
            for r in mine
        ]
        utility = [_number(r.get("utility_acc")) for r in mine]
        for axis, xs in ((left, ssim), (right, tpr)):
            points = [(x, y, r) for x, y, r in zip(xs, utility, mine, strict=True) if x and y]
            if not points:
                continue
            axis.plot(
                [p[0] for p in points], [p[1] for p in points], "o-", label=generator, zorder=3
            )
            for x, y, r in points:
                label = f"K={r['k']}" if r["k"] is not None else generator
                axis.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    real_utility = _number(real.get("utility_acc")) if real else None
    for axis in (left, right):
        if real_utility is not None:
            axis.axhline(real_utility, color="grey", ls="--", lw=1, label="real members (utility)")
        axis.set_ylabel("utility: test accuracy of the retrained model")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    real_ssim = _number(real.get("nn_ssim_mean")) if real else None
    if real_ssim is not None:
        left.axvline(real_ssim, color="grey", ls=":", lw=1, label="real non-members (similarity)")
    left.set_xlabel("mean SSIM of each released image to its nearest member")
    left.set_xlim(0, 1)
    right.axvline(0.01, color="grey", ls=":", lw=1, label="chance (TPR = FPR)")
    target_tpr = _number(target.get("mia_model_tpr_at_1fpr")) if target else None
    if target_tpr is not None and target is not None:
        right.plot(
            [target_tpr],
            [_number(target.get("utility_acc")) or 0],
            "k*",
            ms=10,
            label="the target model itself",
        )
    right.set_xscale("log")
    right.set_xlim(1e-3, 1)
    right.set_xlabel("worst membership attack: TPR at 1% FPR (log)")
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
