"""Model inversion of the target and each retrained model, scored against members and
non-members of each class and by the population model (trained on the test split, which no
attacked model saw)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.inversion import VARIANTS, invert, score_reconstructions
from audit.core import layout
from audit.core.columns import INV, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.seeding import numpy_rng
from audit.core.training import predict_logits
from audit.engine.context import TaskContext
from audit.engine.costs import scaled
from audit.engine.spec import ATTACK, Plan, Stage, Task

log = logging.getLogger(__name__)

# the model-inversion columns of every attacked row
COLUMNS: tuple[Column, ...] = (
    Column(
        "inversion_nn_ssim_member",
        "model inversion (priors): mean SSIM of each reconstruction to its nearest member",
        "[-1, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "inversion_nn_ssim_nonmember",
        "the same to the nearest non-member: the yardstick for inversion_nn_ssim_member",
        "[-1, 1]",
        NEUTRAL,
        INV,
    ),
    Column(
        "inversion_eval_acc",
        "share of priors reconstructions an independent classifier assigns to the class "
        "they were inverted for",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "inversion_miface_eval_acc",
        "the same for the MI-Face variant (no priors)",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
)

EVALUATOR = layout.POPULATION_MODEL  # trained on the test split, which no attacked model saw

# seconds a row costs on the reference CPU at 16x16 px per 100 inversion steps
ROW_S = 4.5


def inversion_tasks(plan: Plan) -> list[Task]:
    """One inversion task per attacked model (the target and each release's retrained model).

    Args:
        plan: the run's plan (config, planned releases, data size for the cost estimate).

    Returns:
        The tasks, named by row, each reading the model's weights and the evaluator's; cost:
        ROW_S seconds per 100 `inversion.steps`, scaled to the data's pixel count.
    """
    return [
        Task(
            "inversion",
            row,
            invert_model,
            (row, path),
            reads=(path, EVALUATOR),
            cost=scaled(plan, ROW_S * plan.config.inversion.steps / 100),
        )
        for row, path in plan.attacked_models().items()
    ]


def write_inversion(ctx: TaskContext, results: dict[str, Any]) -> None:
    """The stage's combine step: write inversion.json and the inversion columns.

    Args:
        ctx: the task's context (config, data, run directory).
        results: row -> what invert_model returned, as read back from JSON: [per-variant
            report, results columns].
    """
    evaluator_acc = ctx.store.read_json(layout.POPULATION_SUMMARY)["acc_nonmembers"]
    report = {row: r[0] for row, r in results.items()}
    for row, r in report.items():
        priors, miface = r["priors"], r["miface"]
        log.info(
            "[inversion] %s: NN-SSIM to members %.3f vs non-members %.3f, evaluator accuracy "
            "%.2f (MIFace %.2f)",
            row,
            priors["nn_ssim_member"],
            priors["nn_ssim_nonmember"],
            priors["eval_acc"],
            miface["eval_acc"],
        )
    ctx.store.write_json(
        layout.summary("inversion"),
        {"models": report, "evaluator_acc_on_nonmembers": evaluator_acc},
    )
    ctx.store.write_json(
        layout.stage_columns("inversion"), {row: r[1] for row, r in results.items()}
    )


def invert_model(
    ctx: TaskContext, row: str, path: str
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Both inversion variants on one saved model: (per-variant report, results columns).

    Writes each variant's reconstructions, evaluator verdicts and scores to
    layout.reconstructions(row, variant).

    Args:
        ctx: the task's context (config, data, run directory).
        row: the attacked model's row ("target", "bn_match-k200"...).
        path: its saved weights in the run directory (layout.TARGET or layout.model(row)).

    Returns:
        The report, variant ("priors", "miface") -> {"nn_ssim_member", "nn_ssim_nonmember",
        "nn_haarpsi_member", "nn_haarpsi_nonmember": mean best similarity over the
        reconstructions (NaN-skipping; SSIM <= 1, HaarPSI in [0, 1]), "ssim_gap": mean member
        minus non-member SSIM, "eval_acc": share in [0, 1] the evaluator assigns to the class
        inverted for}; and the row's four inversion_* columns (COLUMNS), by name.
    """
    c, data, split = ctx.config, ctx.data, ctx.split()
    model, evaluator = ctx.saved_model(path), ctx.saved_model(EVALUATOR)
    report: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        reconstructions = invert(
            model,
            num_classes=len(data.classes),
            channels=data.channels,
            image_size=data.image_size,
            cfg=c.inversion,
            variant=variant,
            seed=c.seed,
            stream=f"inversion-{row}-{variant}",
            device=c.device,
        )
        scores = score_reconstructions(
            reconstructions,
            data.images[split.members],
            data.labels[split.members],
            data.images[split.nonmembers],
            data.labels[split.nonmembers],
            rng=numpy_rng(c.seed, "inversion", "score", row, variant),
            device=c.device,
        )
        predicted = predict_logits(evaluator, reconstructions.images, device=c.device)
        correct = predicted.argmax(1).numpy() == reconstructions.labels
        ctx.store.write_npz(
            layout.reconstructions(row, variant),
            images=reconstructions.images,
            labels=reconstructions.labels,
            evaluator_correct=correct,
            **scores,
        )
        report[variant] = {
            **{f"nn_{key}": float(np.nanmean(v)) for key, v in scores.items()},
            "ssim_gap": float(np.nanmean(scores["ssim_member"] - scores["ssim_nonmember"])),
            "eval_acc": float(correct.mean()),
        }
    priors, miface = report["priors"], report["miface"]
    columns = {
        "inversion_nn_ssim_member": priors["nn_ssim_member"],
        "inversion_nn_ssim_nonmember": priors["nn_ssim_nonmember"],
        "inversion_eval_acc": priors["eval_acc"],
        "inversion_miface_eval_acc": miface["eval_acc"],
    }
    return report, columns


STAGE = Stage(
    "inversion",
    config=(*ATTACK, "inversion", "target"),
    reads=("split", "target", "generate", "utility", "population_model"),
    row_reads=("generate", "utility"),
    tasks=inversion_tasks,
    combine=write_inversion,
    columns=COLUMNS,
)
