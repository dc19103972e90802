"""Estimated seconds per task, for `audit run --dry-run` and the executor's progress.

Work units (image-epochs of training, image-steps of BN matching, image pairs compared) times
rates measured on the reference machine: the 2-core CPU of this project's CI, from the default
digits run's stage timings (16x16 images). Rates scale with the pixel count; on a GPU the real
times are far lower. These are estimates for planning, never figures to report.
"""

from __future__ import annotations

from audit.engine.spec import Plan
from generators.registry import plugin

REFERENCE_PIXELS = 16 * 16
# from the default run (629 members, 2 threads): target 15.2 s for 40 epochs, privacy 1 s a row;
# each generator's rate is its plugin's (generators/base.py GeneratorPlugin.cost)
TRAIN_IMAGE_EPOCH_S = 6.0e-4  # ResNet20 training, per image and epoch
PAIR_S = 1.6e-5  # a privacy row per (query, member) pair: both metrics and the holdout tests


def _scale(plan: Plan) -> float:
    return plan.image_size**2 / REFERENCE_PIXELS


def _capped(n: float, cap: int | None) -> int:
    return int(min(n, cap) if cap else n)


def n_members(plan: Plan) -> int:
    c = plan.config
    return _capped(plan.n_images * c.member_fraction, c.max_members)


def n_test(plan: Plan) -> int:
    c = plan.config
    rest = 1 - c.member_fraction - c.nonmember_fraction
    return _capped(plan.n_images * rest, c.max_test)


def training_cost(plan: Plan, epochs: int, n: int) -> float:
    return TRAIN_IMAGE_EPOCH_S * epochs * n * _scale(plan)


def generation_cost(plan: Plan, generator: str, members: int | None = None) -> float:
    """The generator's own estimate (its plugin's cost), scaled to the data's pixel count."""
    n = n_members(plan) if members is None else members
    return plugin(generator).cost(plan.config, n) * _scale(plan)


def similarity_cost(plan: Plan) -> float:
    return PAIR_S * plan.config.n_synthetic * n_members(plan) * _scale(plan)


def scaled(plan: Plan, seconds: float) -> float:
    """An estimate at the reference 16x16 px, scaled to the data's pixel count."""
    return seconds * _scale(plan)


def reference_cost(plan: Plan) -> float:
    """One reference pipeline: a target on half the pool, every generator, the retrainings."""
    c = plan.config
    half = (n_members(plan) + _capped(plan.n_images * c.nonmember_fraction, c.max_nonmembers)) // 2
    generators = [g for g in c.generator if plugin(g).reproducible]
    retrained = [r for r in plan.releases if plugin(r.generator).reproducible]
    return (
        training_cost(plan, c.target.epochs, half)
        + sum(generation_cost(plan, g, half) for g in generators)
        + len(retrained) * training_cost(plan, c.utility.epochs, c.n_synthetic)
    )


def target_cost(plan: Plan) -> float:
    return (
        0.0
        if plan.config.weights
        else training_cost(plan, plan.config.target.epochs, n_members(plan))
    )


def population_cost(plan: Plan) -> float:
    c = plan.config
    return 0.0 if c.attacker_weights else training_cost(plan, c.inversion.eval_epochs, n_test(plan))


def canary_cost(plan: Plan) -> float:
    c = plan.config
    if not c.canaries:
        return 0.0
    generators = [g for g in c.generator if plugin(g).reruns_on_canaries(c)]
    return target_cost(plan) + sum(generation_cost(plan, g) for g in generators)
