"""The population model: a classifier trained on records no audited pipeline trains on."""

from __future__ import annotations

import dataclasses
import logging

from audit.core.models import load_weights
from audit.core.training import accuracy, train_classifier
from audit.engine.costs import population_cost
from audit.engine.run import Run
from audit.engine.spec import ATTACK, Stage

log = logging.getLogger(__name__)

POPULATION_MODEL = "population_model.pt"


def stage_population_model(run: Run) -> None:
    """A classifier of the --model architecture trained on the population records (the test
    split), which no audited pipeline trains on: the features a release attacker could compute,
    and the independent evaluator of model inversion. --attacker-weights supplies one instead."""
    c, data, split = run.config, run.data, run.split()
    model = run.new_model("evaluator")
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
    run.store.write_state_dict(POPULATION_MODEL, model.state_dict())
    acc = accuracy(
        run.saved_model(POPULATION_MODEL),
        data.images[split.nonmembers],
        data.labels[split.nonmembers],
        device=c.device,
    )
    run.store.write_json("population_model.json", {"source": source, "acc_nonmembers": acc})
    log.info("[population_model] %s: accuracy on non-members %.3f", source, acc)


STAGE = Stage(
    "population_model",
    stage_population_model,
    config=(*ATTACK, "inversion", "target", "attacker_weights"),
    reads=("split",),
    cost=population_cost,
)
