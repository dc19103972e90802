"""The generator interface: what a generator is given, what it returns, and what it declares about
itself (`GeneratorPlugin`). generators/registry.py lists the plugins; the engine derives the
rest (release rows, cost estimates, cache keys, reference and canary reruns) from their
declarations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from audit.core.columns import Column
from audit.core.config import RunConfig
from audit.core.models import NormalizedClassifier


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
    # the same canaries' scores in a second DP mechanism of the generator (bn_match_dp's
    # released statistics: each canary's own coordinate over the clip, higher = more likely
    # inserted); audited beside gradient_scores on the same coins; not saved
    statistics_scores: np.ndarray | None = None


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
    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """One synthetic set per requested K or epsilon, or {None: set}.

        Args:
            request: the teacher or private records to generate from, the Ks or epsilons, the
                set size and image shape, the seed and device, and the optional callbacks.

        Returns:
            K (request.ks) or target epsilon (request.epsilons) -> its SyntheticSet, or
            {None: set} for a generator with a single set.
        """
        ...


def no_cost(config: RunConfig, members: int) -> float:
    """The default `GeneratorPlugin.cost`: nothing to estimate (e.g. a set read from disk).

    Args:
        config: the run's config (unused).
        members: the private records the generator would train on (unused).

    Returns:
        0.0 seconds.
    """
    return 0.0


def no_checks(config: RunConfig, channels: int, image_size: int) -> None:
    """The default `GeneratorPlugin.check`: a generator with no input checks of its own.

    Args:
        config: the run's config (unused).
        channels: the private images' channels (unused).
        image_size: the private images' side in pixels (unused).
    """
    return None


@dataclass(frozen=True)
class GeneratorPlugin:
    """A generator as the engine sees it.

    Attributes:
        name: the `--generator` name and the prefix of its rows ("bn_match-k200").
        axis: what its sets are keyed by: "k" (one per requested K), "epsilon" (one per target
            epsilon) or None (a single set).
        build: the generator for a run's config.
        settings: the RunConfig fields it reads (its sections, e.g. ("vae", "dp")); a release
            row's cache key holds these and no other generator's.
        cost: estimated seconds of one generation on the reference 2-core CPU at 16x16 px, given
            the config and the number of private records it trains on.
        reproducible: whether a pipeline can rerun it on other records (the reference pipelines,
            the canary audit); an external set cannot be.
        from_teacher: it synthesises from the target classifier (needs BatchNorm layers; not
            rerun on canaries when the target is a given weights file, which no run can retrain).
        check: its own input checks, before any file is written (raise AuditError).
        columns: the results columns its rows add (its SyntheticSet.info), for the column
            dictionary.
        summary: a few words for `--generator`'s help.
    """

    name: str
    axis: Axis
    build: Callable[[RunConfig], Generator]
    settings: tuple[str, ...] = ()
    cost: Callable[[RunConfig, int], float] = no_cost
    reproducible: bool = True
    from_teacher: bool = False
    check: Callable[[RunConfig, int, int], None] = no_checks
    columns: tuple[Column, ...] = ()
    summary: str = ""

    def keys(self, config: RunConfig) -> tuple[SetKey, ...]:
        """The sets the config asks of it: its Ks, its epsilons, or the one set.

        Args:
            config: the run's config (its top-level `k` and `epsilon`).

        Returns:
            config.k (int steps) on the "k" axis, config.epsilon (float targets) on the
            "epsilon" axis, else (None,).
        """
        if self.axis == "k":
            return config.k
        if self.axis == "epsilon":
            return config.epsilon
        return (None,)

    def reruns_on_canaries(self, config: RunConfig) -> bool:
        """Whether the canary audit can rerun it on members + canaries: not an external set,
        and not a generator from a target given as a weights file (no run can retrain it).

        Args:
            config: the run's config (its weights).

        Returns:
            True when the canary stage reruns it.
        """
        return self.reproducible and not (self.from_teacher and config.weights)

    def setting(self, key: SetKey) -> tuple[int | None, float | None]:
        """(k, epsilon) of one of its sets.

        Args:
            key: one of `keys`: an int K, a target epsilon, or None for the single set.

        Returns:
            (key, None) on the "k" axis, (None, float(key)) on the "epsilon" axis, else
            (None, None).

        Raises:
            AssertionError: on the "k" axis a key that is not an int, on the "epsilon" axis
                None.
        """
        if self.axis == "k":
            assert isinstance(key, int)
            return key, None
        if self.axis == "epsilon":
            assert key is not None
            return None, float(key)
        return None, None
