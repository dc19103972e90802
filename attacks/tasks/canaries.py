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
from attacks.tasks.canary_scores import (
    audit_release,
    choose_canaries,
    describe,
    gradient_coins,
)
from audit.core import layout
from audit.core.columns import CANARY, LESS_LEAKAGE, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.layout import row_name
from audit.core.training import predict_logits, train_classifier
from audit.engine.context import TaskContext, generation_request, new_classifier
from audit.engine.costs import canary_cost
from audit.engine.spec import ATTACK, GENERATION, TARGET_ROW, Stage
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
        "gradient canaries in DP-SGD), whitebox_statistics (the same canaries in bn_match_dp's "
        "statistics release), whitebox_loss (the target model's loss)",
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


def stage_canaries(ctx: TaskContext) -> None:
    """The `canaries` stage: rerun the pipeline on members + included canaries and audit it.

    Writes canaries.json (the canaries, their coins, delta, confidence and each row's figures)
    and the stage's columns; with `canaries` 0 an empty summary and no columns. With --weights
    the target and teacher-based generators (BN matching) are not audited.

    Args:
        ctx: the task's context (config, data, run directory).

    Raises:
        AuditError: `canaries` exceeds the test split's size.
    """
    c, data, split = ctx.config, ctx.data, ctx.split()
    if c.canaries == 0:
        ctx.store.write_json(layout.summary("canaries"), {"canaries": 0})
        ctx.store.write_json(layout.stage_columns("canaries"), {})
        return
    index, images, labels, included = choose_canaries(ctx)
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
    teacher = new_classifier(ctx.config, ctx.data, "canary-target")
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
        if not declared.reruns_on_canaries(c):
            continue
        # planned for the members and every canary: no coin moves the DP schedule or noise
        request = generation_request(
            ctx.config,
            ctx.data,
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
    ctx.store.write_json(
        layout.summary("canaries"),
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
    ctx.store.write_json(layout.stage_columns("canaries"), columns)


STAGE = Stage(  # the one-run epsilon audit, the costliest, last
    "canaries",
    stage_canaries,
    config=(*ATTACK, "weights", "canaries", "gradient_canaries", "target", *GENERATION),
    reads=("split", "generate"),
    cost=canary_cost,
    columns=COLUMNS,
)
