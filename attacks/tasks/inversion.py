"""Model inversion of the target and each retrained model, scored against members and
non-members of each class and by the population model (trained on the test split, which no
attacked model saw)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.inversion import VARIANTS, invert, score_reconstructions
from attacks.tasks.population import POPULATION_MODEL
from audit.core.columns import INV, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.seeding import numpy_rng
from audit.core.training import predict_logits
from audit.engine.costs import scaled
from audit.engine.run import Run
from audit.engine.spec import ATTACK, Plan, Stage, Task

log = logging.getLogger(__name__)

# the model-inversion columns of every attacked row
COLUMNS: tuple[Column, ...] = (
    Column(
        "inversion_nn_ssim_member",
        "model inversion (priors): mean SSIM of each reconstruction to its nearest member",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "inversion_nn_ssim_nonmember",
        "the same to the nearest non-member: the yardstick for inversion_nn_ssim_member",
        "[0, 1]",
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

EVALUATOR = POPULATION_MODEL  # trained on the test split, which no attacked model saw

# seconds a row costs on the reference CPU at 16x16 px per 100 inversion steps
ROW_S = 4.5


def inversion_tasks(plan: Plan) -> list[Task]:
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


def write_inversion(run: Run, results: dict[str, Any]) -> None:
    evaluator_acc = run.store.read_json("population_model.json")["acc_nonmembers"]
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
    run.store.write_json(
        "inversion.json",
        {"models": report, "evaluator_acc_on_nonmembers": evaluator_acc},
    )
    run.store.write_json("columns/inversion.json", {row: r[1] for row, r in results.items()})


def invert_model(
    run: Run, row: str, path: str
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Both inversion variants on one saved model: (per-variant report, results columns)."""
    c, data, split = run.config, run.data, run.split()
    model, evaluator = run.saved_model(path), run.saved_model(EVALUATOR)
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
        run.store.write_npz(
            f"inversion/{row}-{variant}.npz",
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
