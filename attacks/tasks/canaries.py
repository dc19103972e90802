"""The `canaries` stage: every generator's epsilon audited in one run (attacks/canary.py).

With --canaries M, M records of the test split (which no model of the run trains on) become
canaries: each gets a wrong label drawn at random (a mislabelled record is what a model must
memorise to fit, the classic worst case short of crafted canaries) and joins the private set by an
independent fair coin. The whole pipeline then runs once more on members + included canaries:
the target (its canary losses give the target model's own eps_audit), BN matching from that
target, and each DP generator. Each release is scored per canary black-box (the SSIM of the
canary's nearest released image) and, where the generator allows, white-box (the VAE's negative
ELBO; DPD-fVAE's decoder-only fit). The confidence is split over the scores (Bonferroni).

The main run's releases are untouched: this is a second, audit-only run of the same code and
settings, as Steinke et al. do it; its releases are not kept.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attacks.canary import CONFIDENCE, CanaryAudit, audit_canaries
from audit.graph import TARGET_ROW, release_setting
from audit.run import Run
from audit.seeding import numpy_rng
from audit.similarity import nearest_neighbours
from audit.store import row_name, row_of
from audit.tasks.split import check_canary_room
from audit.training import predict_logits, train_classifier
from generators.base import get_generator

log = logging.getLogger(__name__)


def choose_canaries(
    run: Run,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, images, wrong labels, included coins) of the run's canaries."""
    c, data, split = run.config, run.data, run.split()
    m, classes = c.canaries, len(data.classes)
    check_canary_room(c, split)  # again: a reused split may predate a larger --canaries
    rng = numpy_rng(c.seed, "canaries")
    index = np.sort(rng.choice(split.test, m, replace=False))
    labels = (data.labels[index] + rng.integers(1, classes, m)) % classes
    included = rng.random(m) < 0.5
    return index, data.images[index], labels.astype(np.int64), included


def _audit(scores: dict[str, np.ndarray], included: np.ndarray, delta: float) -> dict[str, Any]:
    """The best bound over the scores, each at confidence 1 - 0.05 / (number of scores)."""
    confidence = 1 - (1 - CONFIDENCE) / len(scores)
    audits = {
        name: audit_canaries(values, included, delta=delta, confidence=confidence)
        for name, values in scores.items()
    }
    best_name = max(audits, key=lambda name: audits[name].eps_audit)
    best: CanaryAudit = audits[best_name]
    return {
        **best.to_dict(),
        "eps_audit_confidence": CONFIDENCE,  # overall, after the split among scores
        "eps_audit_score": best_name if best.eps_audit > 0 else None,  # none refutes eps 0
        **{f"eps_audit_{name}": a.eps_audit for name, a in audits.items()},
    }


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
        columns[TARGET_ROW] = _audit({"whitebox_loss": -loss}, included, delta)
    releases = {row_of(r): r for r in run.releases()}
    for name in c.generator:
        if name == "external" or (name == "bn_match" and c.weights):
            continue
        generator = get_generator(name, c)
        request = run.generation_request(teacher, train_images, train_labels)
        for key, synthetic in generator.generate(request).items():
            row = row_name(name, *release_setting(generator.axis, key))
            nearest, _ = nearest_neighbours(images, synthetic.images, "ssim", k=1, device=c.device)
            scores = {"blackbox_ssim": nearest[:, 0]}
            if synthetic.score_records is not None:
                scores["whitebox"] = -synthetic.score_records(images, labels)
            columns[row] = _audit(scores, included, delta)
            claimed = releases.get(row, {}).get("eps_accountant")
            if claimed is not None:
                columns[row]["dp_claim_violated"] = bool(columns[row]["eps_audit"] > claimed)
    for row, figures in columns.items():
        claim = figures.get("dp_claim_violated")
        found = (
            f"{figures['eps_audit_score']}, {figures['canary_correct']} of "
            f"{figures['canary_guesses']} guesses right"
            if figures["canary_guesses"]
            else "no guess count refutes epsilon 0"
        )
        log.info(
            "[canaries] %s: eps_audit %.2f (%s)%s",
            row,
            figures["eps_audit"],
            found,
            "" if claim is None else (" DP CLAIM VIOLATED" if claim else ", within the claim"),
        )
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
