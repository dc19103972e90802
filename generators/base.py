"""The generator interface and registry: a new generator registers here, the core is not edited."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from audit.config import RunConfig
from audit.errors import AuditError
from audit.models import NormalizedClassifier


@dataclass(frozen=True)
class SyntheticSet:
    """A release exactly as it would leave the building: uint8 NHWC images and int labels."""

    images: np.ndarray
    labels: np.ndarray
    info: dict[str, Any]  # columns for this set's row (BN loss, the DP record...)
    # the optimiser's state at this K, from which a later run can go on to a larger K
    checkpoint: dict[str, np.ndarray] | None = None
    # a white-box membership score of (images, labels), lower = more likely trained on, where
    # the generator's released model allows one (the canary audit uses it); not saved
    score_records: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # the white-box gradient canaries' scores (higher = more likely inserted), where the request
    # planted them in a DP-SGD training (generators/dp_sgd.py GradientCanaries); not saved
    gradient_scores: np.ndarray | None = None


SetKey = int | float | None  # a K, a target epsilon, or None (a single set)
Axis = Literal["k", "epsilon"] | None


@dataclass(frozen=True)
class GenerationRequest:
    teacher: NormalizedClassifier  # trained on the members; generators must not modify it
    ks: tuple[int, ...]  # sorted, positive
    n_images: int
    num_classes: int
    channels: int
    image_size: int
    seed: int
    device: str
    classes: tuple[str, ...] = ()  # the private dataset's class names, label order
    # a checkpoint an earlier run saved at a K below every requested K: resume from there
    # instead of from step 0 (generators that cannot resume start afresh, which is also correct)
    resume: dict[str, np.ndarray] | None = None
    # called with each K's set as soon as it is final, so the caller can save it before the
    # larger Ks finish (a killed run keeps it); generators may instead only return their sets
    on_set: Callable[[SetKey, SyntheticSet], None] | None = None
    # the private records (members) for generators that train on them rather than on the
    # teacher (the VAEs); uint8 NHWC and int labels
    private_images: np.ndarray | None = None
    private_labels: np.ndarray | None = None
    epsilons: tuple[float, ...] = ()  # sorted, positive: a DP generator's targets
    # the canary audit only: white-box gradient canaries' coins, planted by the DP-SGD
    # generators in each training (one canary per coin; generators/dp_sgd.py GradientCanaries)
    gradient_canary_coins: np.ndarray | None = None
    # the public record count DP generators plan their sampling, steps and noise for (None: the
    # number of private records); the canary audit plans for members + every canary, so that no
    # coin moves the schedule
    planned_records: int | None = None


class Generator(Protocol):
    name: str
    # what the sets are keyed by: "k" (one per requested K), "epsilon" (one per target
    # epsilon), or None (a single set, key None: an external set, a non-private ablation)
    axis: Axis

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """One synthetic set per requested K or epsilon, or {None: set}."""
        ...


REGISTRY: dict[str, Callable[[RunConfig], Generator]] = {}


def register(
    name: str,
) -> Callable[[Callable[[RunConfig], Generator]], Callable[[RunConfig], Generator]]:
    def decorate(factory: Callable[[RunConfig], Generator]) -> Callable[[RunConfig], Generator]:
        REGISTRY[name] = factory
        return factory

    return decorate


def get_generator(name: str, config: RunConfig) -> Generator:
    # importing the modules fills the registry
    from generators import bn_match, dp2_vae, dp_vae, dpd_fvae, external, vae  # noqa: F401

    if name not in REGISTRY:
        raise AuditError(f"unknown generator {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](config)
