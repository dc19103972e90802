"""The generator interface and registry: a new generator registers here, the core is not edited."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from audit.config import RunConfig
from audit.errors import AuditError
from audit.models import NormalizedClassifier


@dataclass(frozen=True)
class SyntheticSet:
    """A release exactly as it would leave the building: uint8 NHWC images and int labels."""

    images: np.ndarray
    labels: np.ndarray
    info: dict[str, float]  # generator diagnostics for this K (e.g. final BN loss)
    # the optimiser's state at this K, from which a later run can go on to a larger K
    checkpoint: dict[str, np.ndarray] | None = None


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
    on_set: Callable[[int | None, SyntheticSet], None] | None = None


class Generator(Protocol):
    name: str
    uses_k: bool  # one set per requested K (else a single set, key None)

    def generate(self, request: GenerationRequest) -> dict[int | None, SyntheticSet]:
        """One synthetic set per requested K (key None: a set with no K, e.g. an external one)."""
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
    from generators import bn_match, external  # noqa: F401

    if name not in REGISTRY:
        raise AuditError(f"unknown generator {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](config)
