"""The `canaries` stage: every generator's epsilon audited in one run (attacks/canary.py).

With --canaries M, M records of the test split (which no model of the run trains on) become
canaries: each gets a wrong label drawn at random (a mislabelled record is what a model must
memorise to fit, the classic worst case short of crafted canaries) and joins the private set by an
independent fair coin. Beside them, every DP-SGD training of the audit run plants
--gradient-canaries white-box Dirac gradient canaries (generators/dp_sgd.py), each with its own
fair coin. The whole pipeline then runs once more on members + included canaries: the target (its
canary losses give the target model's own eps_audit), BN matching from that target, and each DP
generator. Each release is scored per canary:

* blackbox_ssim_label: the SSIM of the canary's nearest released image OF ITS (wrong) LABEL: a
  labelled release of a memorised canary shows it under that label;
* whitebox: the released model's fit of the canary (the VAE's negative ELBO; DPD-fVAE's
  decoder-only fit), where the generator releases a model;
* whitebox_gradient: the gradient canaries' summed privatised gradients (DP-SGD generators).

The confidence is split over the scores (Bonferroni). Each row states eps_audit_max, the bound a
perfect attack would reach with these canaries; a claim at or above it is "uninformative".

The main run's releases are untouched: this is a second, audit-only run of the same code and
settings, as Steinke et al. do it; its releases are not kept.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attacks.canary import CONFIDENCE, audit_scores
from audit.core.columns import CANARY, LESS_LEAKAGE, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.config import RunConfig
from audit.core.seeding import numpy_rng
from audit.core.similarity import nearest_neighbours
from audit.core.store import row_name
from audit.core.training import predict_logits, train_classifier
from audit.engine.costs import canary_cost
from audit.engine.run import Run
from audit.engine.spec import ATTACK, GENERATION, TARGET_ROW, Stage
from audit.tasks.split import check_canary_room
from generators.base import SyntheticSet
from generators.registry import plugin

log = logging.getLogger(__name__)

# the canary audit's columns (attacks/canary.py audit_scores, and the claim tested)
COLUMNS: tuple[Column, ...] = (
    Column(
        "eps_audit",
        "95% lower bound on epsilon from the one-run canary audit (--canaries); above "
        "eps_accountant the DP claim is false",
        ">= 0",
        MORE_LEAKAGE,
        CANARY,
    ),
    Column(
        "eps_audit_max",
        "the largest eps_audit a perfect attack (every guess right) could give with these "
        "canaries and scores; a claim at or above it cannot be refuted: the audit is "
        "uninformative about it",
        ">= 0",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "eps_audit_confidence",
        "confidence of eps_audit (overall, after the split among scores)",
        "(0, 1)",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "canaries",
        "canaries behind the best bound (each included by a fair coin)",
        "integer >= 2",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "canary_guesses",
        "guesses behind the best bound",
        "integer >= 0",
        NEUTRAL,
        CANARY,
    ),
    Column("canary_correct", "right guesses among them", "integer >= 0", MORE_LEAKAGE, CANARY),
    Column(
        "eps_audit_score",
        "the score that gave eps_audit; empty when none refutes epsilon 0",
        "text",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "eps_audit_{score}",
        "eps_audit by one score: blackbox_ssim_label (SSIM to the nearest released image of "
        "the canary's label), whitebox (the released model's fit), whitebox_gradient (Dirac "
        "gradient canaries in DP-SGD), whitebox_loss (the target model's loss)",
        ">= 0",
        MORE_LEAKAGE,
        CANARY,
    ),
    Column(
        "eps_audit_max_{score}",
        "what a perfect attack by that score could reach (at its share of the confidence)",
        ">= 0",
        NEUTRAL,
        CANARY,
    ),
    Column("canaries_{score}", "canaries that score ranks", "integer >= 2", NEUTRAL, CANARY),
    Column(
        "dp_claim_audited",
        "the claim the audit tested: the audit run's own eps_accountant (its DP schedule is "
        "planned for the members and every canary, and its trainings carry the gradient "
        "canaries)",
        "> 0",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_p",
        "p-value of H0 'the training is (dp_claim_audited, dp_delta)-DP' (Steinke et al.; "
        "Bonferroni over scores and guess counts); the gate's dp_claim test",
        "[0, 1]",
        LESS_LEAKAGE,
        CANARY,
    ),
    Column(
        "dp_claim_p_min",
        "the p-value a perfect attack would get: a level below it cannot be reached",
        "[0, 1]",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_status",
        "refuted (eps_audit above the claim) | not refuted | uninformative (the claim at or "
        "above eps_audit_max) | not formal (; refuted); per row at 95%, unadjusted: the gate's "
        "dp_claim test judges dp_claim_p at its family-wise level",
        "text",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_violated",
        "eps_audit > the claim: the canary audit refutes the DP claim at 95%",
        "true | false",
        MORE_LEAKAGE,
        CANARY,
    ),
)


def choose_canaries(
    run: Run,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, images, wrong labels, included coins) of the run's canaries."""
    c, data, split = run.config, run.data, run.split()
    check_canary_room(c, split)  # again: a reused split may predate a larger --canaries
    index, labels, included = draw_canaries(
        c.seed, split.test, data.labels, c.canaries, len(data.classes)
    )
    return index, data.images[index], labels, included


def draw_canaries(
    seed: int, test: np.ndarray, labels: np.ndarray, m: int, classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, wrong labels, included coins) of m canaries drawn from the test split:
    each relabelled uniformly among the other classes, each in by a fair coin (seeded)."""
    rng = numpy_rng(seed, "canaries")
    index = np.sort(rng.choice(test, m, replace=False))
    wrong = (labels[index] + rng.integers(1, classes, m)) % classes
    return index, wrong.astype(np.int64), rng.random(m) < 0.5


def label_aware_ssim(
    canaries: np.ndarray,
    labels: np.ndarray,
    release: np.ndarray,
    release_labels: np.ndarray,
    device: str,
) -> np.ndarray:
    """Each canary's SSIM to its nearest released image of the canary's label (-inf where the
    release has none of that label)."""
    scores = np.full(len(canaries), -np.inf)
    for label in np.unique(labels):
        mine, theirs = labels == label, release_labels == label
        if theirs.any():
            nearest, _ = nearest_neighbours(
                canaries[mine], release[theirs], "ssim", k=1, device=device, progress=False
            )
            scores[mine] = nearest[:, 0]
    return scores


def gradient_coins(config: RunConfig) -> np.ndarray | None:
    """The white-box gradient canaries' fair coins (None: none planted)."""
    if config.gradient_canaries == 0:
        return None
    return (
        numpy_rng(config.seed, "gradient-canaries", "coins").random(config.gradient_canaries) < 0.5
    )


def stage_canaries(run: Run) -> None:
    c, data, split = run.config, run.data, run.split()
    if c.canaries == 0:
        run.store.write_json("canaries.json", {"canaries": 0})
        run.store.write_json("columns/canaries.json", {})
        return
    index, images, labels, included = choose_canaries(run)
    members = split.members
    train_images = np.concatenate([data.images[members], images[included]])
    train_labels = np.concatenate([data.labels[members], labels[included]])
    delta = c.dp.delta
    log.info(
        "[canaries] %d mislabelled canaries, %d included: the pipeline runs once more on %d "
        "records",
        len(index),
        int(included.sum()),
        len(train_images),
    )
    columns: dict[str, dict[str, Any]] = {}
    teacher = run.new_model("canary-target")
    if c.weights:
        log.warning(
            "[canaries] --weights: the target is not retrained, so BN matching and the "
            "target are not audited with canaries"
        )
    else:
        train_classifier(
            teacher,
            train_images,
            train_labels,
            c.target,
            seed=c.seed,
            stream="canary-target",
            device=c.device,
            desc="canary target",
        )
        logits = predict_logits(teacher, images, device=c.device)
        loss = F.cross_entropy(logits, torch.as_tensor(labels), reduction="none").numpy()
        columns[TARGET_ROW] = audit_scores({"whitebox_loss": (-loss, included)}, delta=delta)
    coins = gradient_coins(c)
    for name in c.generator:
        declared = plugin(name)
        # an external set cannot be rerun; a given target's weights cannot be retrained
        if not declared.reproducible or (declared.from_teacher and c.weights):
            continue
        # planned for the members and every canary: no coin moves the DP schedule or noise
        request = run.generation_request(
            teacher,
            train_images,
            train_labels,
            gradient_canary_coins=coins,
            planned_records=len(members) + len(index),
        )
        for key, synthetic in declared.build(c).generate(request).items():
            row = row_name(name, *declared.setting(key))
            columns[row] = audit_release(synthetic, images, labels, included, coins, c)
    for row, figures in columns.items():
        log.info("[canaries] %s: %s", row, describe(figures))
    run.store.write_json(
        "canaries.json",
        {
            "canaries": len(index),
            "index": index,
            "labels": labels,
            "included": included,
            "delta": delta,
            "confidence": CONFIDENCE,
            "rows": columns,
        },
    )
    run.store.write_json("columns/canaries.json", columns)


def audit_release(
    synthetic: SyntheticSet,
    images: np.ndarray,
    labels: np.ndarray,
    included: np.ndarray,
    coins: np.ndarray | None,
    config: RunConfig,
) -> dict[str, Any]:
    """One release's canary columns: every score it allows, its claim's p-value and status
    (the claim: the audited training's own eps_accountant, where it makes a formal one)."""
    scores = {
        "blackbox_ssim_label": (
            label_aware_ssim(images, labels, synthetic.images, synthetic.labels, config.device),
            included,
        )
    }
    if synthetic.score_records is not None:
        scores["whitebox"] = (-synthetic.score_records(images, labels), included)
    if synthetic.gradient_scores is not None and coins is not None:
        scores["whitebox_gradient"] = (synthetic.gradient_scores, coins)
    claim = synthetic.info.get("eps_accountant")
    figures = audit_scores(scores, delta=config.dp.delta, claim=claim)
    if claim is not None:
        figures["dp_claim_audited"] = float(claim)
        if not synthetic.info.get("dp_formal", True):  # informative, never gated
            refuted = figures["dp_claim_status"] == "refuted"
            figures["dp_claim_status"] = "not formal; refuted" if refuted else "not formal"
    return figures


def describe(figures: dict[str, Any]) -> str:
    """eps_audit, how it was found, how far the audit could reach, and what it says of a claim."""
    found = (
        f"{figures['eps_audit_score']}, {figures['canary_correct']} of "
        f"{figures['canary_guesses']} guesses right"
        if figures["canary_guesses"]
        else "no guess count refutes epsilon 0"
    )
    reach = figures["eps_audit_max"]
    text = f"eps_audit {figures['eps_audit']:.2f} ({found}; a perfect attack: {reach:.2f})"
    status = figures.get("dp_claim_status")
    if status is None:
        return text
    claim = figures["dp_claim_audited"]
    words = {
        "refuted": f"DP CLAIM REFUTED at 95%: epsilon {claim:.3g} is below the lower bound",
        "not refuted": f"claim {claim:.3g} not refuted (p = {figures['dp_claim_p']:.2g})",
        "uninformative": (
            f"uninformative about claim {claim:.3g}: at or above what this audit can refute"
        ),
        "not formal": f"claim {claim:.3g} is not a formal guarantee; not checked",
        "not formal; refuted": (
            f"claim {claim:.3g} is not a formal guarantee, and the audit refutes it (95%)"
        ),
    }
    return f"{text}; {words[status]}"


STAGE = Stage(  # the one-run epsilon audit, the costliest, last
    "canaries",
    stage_canaries,
    config=(*ATTACK, "weights", "canaries", "gradient_canaries", "target", *GENERATION),
    reads=("split", "generate"),
    cost=canary_cost,
    columns=COLUMNS,
)
