"""Nearest members of each released image, and how that compares with records never used.

The non-members are split into a held-out yardstick (in the pool beside every member for the
holdout share, and calibrating copy detection with a sample of members) and the `real` row's
release, which is what an independent draw from the private distribution scores on the same
tests. Every comparison runs under the generator's augmentations (--nn-shift, --nn-mirror).
Tasks: the holdout row first (its calibration ratios serve the others), then each release and
`real`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from audit.core import layout
from audit.core.data import Split
from audit.core.memorisation import (
    METRICS,
    Yardstick,
    calibration_ratios,
    make_yardstick,
    release_statistics,
)
from audit.core.seeding import numpy_rng
from audit.core.similarity import summarise
from audit.engine.context import TaskContext
from audit.engine.costs import similarity_cost
from audit.engine.spec import COMPUTE, DATA, Plan, Stage, Task

log = logging.getLogger(__name__)

HOLDOUT_SCORES = layout.HOLDOUT_SCORES  # the calibration ratios of copy detection
BLIND_RATIO = 1e-3  # a calibration ratio below this: the dataset holds near-duplicates


def yardstick(ctx: TaskContext, split: Split) -> Yardstick:
    c = ctx.config
    return make_yardstick(
        ctx.data.images,
        split.members,
        split.nonmembers,
        seed=c.seed,
        max_holdout=c.max_holdout,
        max_real=c.max_reference,
        nn_shift=c.nn_shift,
        nn_mirror=bool(c.nn_mirror),
    )


def privacy_tasks(plan: Plan) -> list[Task]:
    cost = similarity_cost(plan)
    return [
        Task("privacy", "holdout", privacy_of_holdout, cost=cost),
        *(
            Task(
                "privacy",
                r.row,
                privacy_of_release,
                (r.path, r.row),
                reads=(r.path, HOLDOUT_SCORES),
                after=("holdout",),
                cost=cost,
            )
            for r in plan.releases
        ),
        Task(
            "privacy",
            "real",
            privacy_of_real,
            reads=(HOLDOUT_SCORES,),
            after=("holdout",),
            cost=cost,
        ),
    ]


def privacy_of_holdout(ctx: TaskContext) -> dict[str, Any]:
    """The calibration ratios of copy detection (audit/core/memorisation.py); the holdout row's
    summary is its records' nearest-member scores."""
    y = yardstick(ctx, ctx.split())
    summary: dict[str, Any] = {"n_scored": len(y.holdout)}
    arrays: dict[str, np.ndarray] = {}
    for metric, (ratios, nearest) in calibration_ratios(y, device=ctx.config.device).items():
        if ratios.min() < BLIND_RATIO:
            log.warning(
                "[privacy] copy detection by %s is nearly blind: a private record is itself a "
                "(near-)duplicate of another (stand-out ratio %.2g), so a released copy must "
                "come closer still to stand out; see the calibration in %s",
                metric,
                ratios.min(),
                HOLDOUT_SCORES,
            )
        summary.update(
            summarise(nearest, prefix=f"nn_{metric}", levels=ctx.config.similarity_levels)
        )
        arrays[f"{metric}_values"] = nearest
        arrays[f"{metric}_calibration"] = ratios
    ctx.store.write_npz(HOLDOUT_SCORES, **arrays)
    return summary


def privacy_of_release(ctx: TaskContext, path: str, name: str) -> dict[str, Any]:
    split = ctx.split()
    images = ctx.store.read_npz(path)["images"]
    return _privacy_row(images, ctx, name, yardstick(ctx, split))


def privacy_of_real(ctx: TaskContext) -> dict[str, Any]:
    split = ctx.split()
    y = yardstick(ctx, split)
    return _privacy_row(ctx.data.images[y.sets.real_release], ctx, "real", y)


def write_privacy(ctx: TaskContext, results: dict[str, Any]) -> None:
    """privacy.json: the releases' rows and `real`, the holdout row, who served as what and the
    transformations searched (the npz files' *_transform arrays index them)."""
    split = ctx.split()
    y = yardstick(ctx, split)
    rows = {name: row for name, row in results.items() if name != "holdout"}
    for name, row in rows.items():
        _log_privacy(name, row)
    ctx.store.write_json(
        layout.PRIVACY,
        {
            "rows": rows,
            "holdout": results["holdout"],
            "holdout_nonmembers": y.sets.holdout,
            "calibration_members": split.members[y.sets.member_sample],
            "reference_nonmembers": y.sets.real_release,
            "transforms": [t.name for t in y.transforms],
        },
    )


def _privacy_row(query: np.ndarray, ctx: TaskContext, name: str, y: Yardstick) -> dict[str, Any]:
    """The row's summary columns; its per-image arrays go to privacy/{name}.npz."""
    c = ctx.config
    saved = ctx.store.read_npz(HOLDOUT_SCORES)
    summary, arrays = release_statistics(
        query,
        y,
        {metric: saved[f"{metric}_calibration"] for metric in METRICS},
        rngs={m: numpy_rng(c.seed, "holdout", "permutations", name, m) for m in METRICS},
        nn_k=c.nn_k,
        levels=c.similarity_levels,
        device=c.device,
    )
    ctx.store.write_npz(layout.privacy_scores(name), **arrays)
    return summary


def _log_privacy(name: str, row: dict[str, Any]) -> None:
    log.info(
        "[privacy] %s: holdout share SSIM %.2f (chance %.2f, p %.2g), HaarPSI %.2f (p %.2g); "
        "suspected copies SSIM %d (p %.2g), HaarPSI %d (p %.2g); %d exact copies; "
        "nearest-member SSIM mean %.3f",
        name,
        row["holdout_share_ssim"],
        row["holdout_share_ssim_expected"],
        row["holdout_share_ssim_p"],
        row["holdout_share_haarpsi"],
        row["holdout_share_haarpsi_p"],
        row["copy_count_ssim"],
        row["copy_count_ssim_p"],
        row["copy_count_haarpsi"],
        row["copy_count_haarpsi_p"],
        row["exact_copies"],
        row["nn_ssim_mean"],
    )


STAGE = Stage(
    "privacy",
    config=(
        *(
            *DATA,
            "similarity_levels",
            "nn_k",
            "nn_shift",
            "nn_mirror",
            "max_reference",
            "max_holdout",
        ),
        *COMPUTE,
    ),
    reads=("split", "generate"),
    row_reads=("generate",),
    tasks=privacy_tasks,
    combine=write_privacy,
)
