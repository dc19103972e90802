"""Nearest members of each released image, and how that compares with records never used.

The non-members are split into a held-out yardstick (calibrating copy detection; as many members
sampled beside it for the holdout share) and the `real` row's release, which is what an
independent draw from the private distribution scores on the same tests. Tasks: the holdout row
first (its scores calibrate the others), then each release and `real`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from audit.costs import similarity_cost
from audit.data import Split
from audit.graph import Plan, Task
from audit.holdout import HoldoutSets, choose_holdout, memorisation_statistics
from audit.run import Run
from audit.seeding import numpy_rng
from audit.similarity import Metric, nearest_neighbours, summarise

log = logging.getLogger(__name__)

METRICS: tuple[Metric, ...] = ("ssim", "haarpsi")
HOLDOUT_SCORES = "privacy/holdout.npz"  # held-out non-members' nearest-member scores


def holdout_sets(run: Run, split: Split) -> HoldoutSets:
    c = run.config
    return choose_holdout(
        split.nonmembers,
        len(split.members),
        numpy_rng(c.seed, "holdout"),
        max_holdout=c.max_holdout,
        max_real=c.max_reference,
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


def privacy_of_holdout(run: Run) -> dict[str, Any]:
    split = run.split()
    sets = holdout_sets(run, split)
    return _privacy_row(run.data.images[sets.holdout], split, run, "holdout", None)


def privacy_of_release(run: Run, path: str, name: str) -> dict[str, Any]:
    split = run.split()
    images = run.store.read_npz(path)["images"]
    return _privacy_row(images, split, run, name, holdout_sets(run, split))


def privacy_of_real(run: Run) -> dict[str, Any]:
    split = run.split()
    sets = holdout_sets(run, split)
    return _privacy_row(run.data.images[sets.real_release], split, run, "real", sets)


def write_privacy(run: Run, results: dict[str, Any]) -> None:
    """privacy.json: the releases' rows and `real`, the holdout row and who served as what."""
    split = run.split()
    sets = holdout_sets(run, split)
    rows = {name: row for name, row in results.items() if name != "holdout"}
    for name, row in rows.items():
        _log_privacy(name, row)
    run.store.write_json(
        "privacy.json",
        {
            "rows": rows,
            "holdout": results["holdout"],
            "holdout_nonmembers": sets.holdout,
            "member_sample": split.members[sets.member_sample],
            "reference_nonmembers": sets.real_release,
        },
    )


def _privacy_row(
    query: np.ndarray, split: Split, run: Run, name: str, sets: HoldoutSets | None
) -> dict[str, Any]:
    """The k nearest members of each query image by each metric (top-1 summarised in the row,
    top-k kept for the report) and, given the held-out sets, the holdout-relative statistics:
    summary row + privacy/{name}.npz. sets=None: the held-out calibration row itself."""
    members = run.data.images[split.members]
    summary: dict[str, Any] = {"n_scored": len(query)}
    arrays: dict[str, np.ndarray] = {}
    k = min(run.config.nn_k, len(members))
    calibration = None if sets is None else run.store.read_npz(HOLDOUT_SCORES)
    device = run.config.device
    for metric in METRICS:
        values, indices = nearest_neighbours(query, members, metric, k=k, device=device)
        summary.update(
            summarise(values[:, 0], prefix=f"nn_{metric}", levels=run.config.similarity_levels)
        )
        arrays[f"{metric}_values"] = values[:, 0]
        arrays[f"{metric}_member"] = indices[:, 0]  # position within split.members
        arrays[f"{metric}_index"] = split.members[indices[:, 0]]  # index in the dataset's order
        arrays[f"{metric}_topk_values"] = values  # (n, k), best first
        arrays[f"{metric}_topk_member"] = indices
    if sets is not None and calibration is not None:
        images = run.data.images
        stats, extra = memorisation_statistics(
            query,
            {metric: arrays[f"{metric}_values"] for metric in METRICS},
            members=members,
            member_sample=members[sets.member_sample],
            holdout=images[sets.holdout],
            calibration={metric: calibration[f"{metric}_values"] for metric in METRICS},
            rng=numpy_rng(run.config.seed, "holdout", "permutations", name),
            device=device,
        )
        summary.update(stats)
        arrays.update(extra)
        arrays["exact_copy_index"] = split.members[extra["exact_copy_member"]]  # dataset index
    run.store.write_npz(f"privacy/{name}.npz", **arrays)
    return summary


HOLDOUT_SCORES = "privacy/holdout.npz"  # held-out non-members' nearest-member scores


def _log_privacy(name: str, row: dict[str, Any]) -> None:
    log.info(
        "[privacy] %s: holdout share SSIM %.2f (p %.2g), HaarPSI %.2f (p %.2g); copy share SSIM "
        "%.3f (p %.2g), HaarPSI %.3f (p %.2g); %d exact copies; nearest-member SSIM mean %.3f",
        name,
        row["holdout_share_ssim"],
        row["holdout_share_ssim_p"],
        row["holdout_share_haarpsi"],
        row["holdout_share_haarpsi_p"],
        row["copy_share_ssim"],
        row["copy_share_ssim_p"],
        row["copy_share_haarpsi"],
        row["copy_share_haarpsi_p"],
        row["exact_copies"],
        row["nn_ssim_mean"],
    )
