"""The population model: a classifier trained on records no audited pipeline trains on."""

from __future__ import annotations

import dataclasses
import logging

from audit.core import layout
from audit.core.training import accuracy, train_classifier
from audit.core.weights import load_weights
from audit.engine.context import TaskContext, new_classifier
from audit.engine.costs import population_cost
from audit.engine.spec import ATTACK, Stage

log = logging.getLogger(__name__)


def stage_population_model(ctx: TaskContext) -> None:
    """A classifier of the --model architecture trained on the population records (the test
    split), which no audited pipeline trains on: the features a release attacker could compute,
    and the independent evaluator of model inversion. --attacker-weights supplies one instead.

    Writes its weights (layout.POPULATION_MODEL) and population_model.json (its source and its
    accuracy on the non-members, in [0, 1]). Trained with the target section's recipe for
    `inversion.eval_epochs` epochs.

    Args:
        ctx: the task's context (config, data, run directory).
    """
    c, data, split = ctx.config, ctx.data, ctx.split()
    model = new_classifier(ctx.config, ctx.data, "evaluator")
    if c.attacker_weights:
        load_weights(model, c.attacker_weights, model_name=c.model, flag="--attacker-weights")
        source = f"loaded from {c.attacker_weights} (--attacker-weights)"
    else:
        train_classifier(
            model,
            data.images[split.test],
            data.labels[split.test],
            dataclasses.replace(c.target, epochs=c.inversion.eval_epochs),
            seed=c.seed,
            stream="evaluator",
            device=c.device,
            desc="population model",
        )
        source = f"trained on the {len(split.test)} population (test) records"
    ctx.store.write_state_dict(layout.POPULATION_MODEL, model.state_dict())
    acc = accuracy(
        ctx.saved_model(layout.POPULATION_MODEL),
        data.images[split.nonmembers],
        data.labels[split.nonmembers],
        device=c.device,
    )
    ctx.store.write_json(layout.POPULATION_SUMMARY, {"source": source, "acc_nonmembers": acc})
    log.info("[population_model] %s: accuracy on non-members %.3f", source, acc)


STAGE = Stage(
    "population_model",
    stage_population_model,
    config=(*ATTACK, "inversion", "target", "attacker_weights"),
    reads=("split",),
    cost=population_cost,
)
