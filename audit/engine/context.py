"""What a task gets (TaskContext), and the factories a task needs from the config and the data
alone: a fresh classifier, a retrained one, a generation request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.core import layout
from audit.core.config import RunConfig
from audit.core.data import ImageDataset, Split, load_dataset
from audit.core.models import NormalizedClassifier, build_model
from audit.core.store import RunDir
from audit.core.training import retrain
from audit.core.weights import load_weights
from audit.engine.keys import RowCache, as_json
from generators.base import GenerationRequest


@dataclass
class TaskContext:
    """What one task gets: the frozen config, the loaded dataset, the run directory and its
    stage's row cache. It runs in the driver's process (serial) or in a worker (Ray); either way
    it gets its own context, so the files it writes, what it reads (checked against its stage's
    declarations by the scheduler) and the timings it records are its own, and go back with its
    result."""

    config: RunConfig
    data: ImageDataset
    store: RunDir
    rows: RowCache | None = None  # the running stage's per-row cache (set by the task runner)
    timings: dict[str, float] = field(default_factory=dict)  # what record_time() measured

    def record_time(self, name: str, seconds: float) -> None:
        """Report a part's duration ("generate.bn_match", "mia_refs.ref0") in the manifest's
        timings; never in the results, which stay deterministic.

        Args:
            name: dotted, starting with the stage's name.
            seconds: wall-clock seconds, >= 0.
        """
        self.timings[name] = round(seconds, 3)

    def row(self, name: str, compute: Callable[[], Any], *, reads: tuple[str, ...] = ()) -> Any:
        """One row of the running stage (a release, the target, the real baseline): its recorded
        result if an earlier run computed it under the same key, else compute() now.

        Args:
            name: the row ("bn_match-k200").
            compute: computes the row's JSON-able result (and writes its files).
            reads: the run-directory files this row's work reads beyond the stage's inputs.

        Returns:
            The result as it reads back from JSON.
        """
        if self.rows is None:
            return as_json(compute())
        return self.rows.get(name, reads, compute)

    def split(self) -> Split:
        """The run's members, non-members and test indices (layout.SPLIT)."""
        arrays = self.store.read_npz(layout.SPLIT)
        return Split(arrays["members"], arrays["nonmembers"], arrays["test"])

    def target(self) -> NormalizedClassifier:
        """The target classifier the run trained or loaded (layout.TARGET), in eval mode."""
        return self.saved_model(layout.TARGET)

    def saved_model(self, name: str) -> NormalizedClassifier:
        """A classifier this run saved.

        Args:
            name: its artifact (layout.TARGET, layout.model(row), layout.POPULATION_MODEL).

        Returns:
            The model with those weights, in eval mode.
        """
        model = new_classifier(self.config, self.data, "saved")
        load_weights(model, str(self.store.read_path(name)), model_name=self.config.model)
        return model.eval()

    def releases(self) -> list[dict]:
        """generate.json's release entries, in the config's order."""
        return list(self.store.read_json(layout.GENERATE)["releases"])


def new_classifier(config: RunConfig, data: ImageDataset, stream: str) -> NormalizedClassifier:
    """A fresh classifier of the run's architecture for the data's shape.

    Args:
        config: the run's config (its model and seed).
        data: the loaded dataset (channels, classes, image size).
        stream: the named seed stream of its initial weights.

    Returns:
        The untrained model.
    """
    return build_model(
        config.model,
        channels=data.channels,
        num_classes=len(data.classes),
        seed=config.seed,
        stream=stream,
        image_size=data.image_size,
    )


def retrain_on(
    config: RunConfig, data: ImageDataset, images: np.ndarray, labels: np.ndarray, stream: str
) -> NormalizedClassifier:
    """A fresh model trained on (images, labels) with the run's utility recipe.

    Args:
        config: the run's config (model, utility recipe, seed, device).
        data: the loaded dataset (its classes).
        images: (N, H, W, C) uint8 training images.
        labels: (N,) int64 labels in [0, classes).
        stream: the named seed stream of its weights and batches.

    Returns:
        The trained model.
    """
    return retrain(
        images,
        labels,
        model_name=config.model,
        num_classes=len(data.classes),
        cfg=config.utility,
        seed=config.seed,
        stream=stream,
        device=config.device,
    )


def generation_request(
    config: RunConfig,
    data: ImageDataset,
    teacher: NormalizedClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    **settings: Any,
) -> GenerationRequest:
    """A request for this run's data shape and settings.

    Args:
        config: the run's config (Ks, epsilons, seed, n_synthetic, device).
        data: the loaded dataset (channels, classes, image size).
        teacher: the classifier trained on the private records.
        images: (N, H, W, C) uint8, the private records generators train on.
        labels: (N,) int64, their labels.
        settings: any GenerationRequest field to override (seed, ks, epsilons, resume, on_set).

    Returns:
        The request.
    """
    fields: dict[str, Any] = {"ks": config.k, "epsilons": config.epsilon, "seed": config.seed}
    fields.update(settings)
    return GenerationRequest(
        teacher=teacher,
        n_images=config.n_synthetic,
        num_classes=len(data.classes),
        channels=data.channels,
        image_size=data.image_size,
        device=config.device,
        classes=data.classes,
        private_images=images,
        private_labels=labels,
        **fields,
    )


# a worker loads each dataset once, however many tasks it runs (the driver seeds its own)
_DATASETS: dict[tuple[Any, ...], ImageDataset] = {}


def _dataset_key(config: RunConfig) -> tuple[Any, ...]:
    return (config.dataset, config.data_root, config.image_size)


def remember_dataset(config: RunConfig, data: ImageDataset) -> None:
    _DATASETS[_dataset_key(config)] = data


def dataset_for(config: RunConfig) -> ImageDataset:
    """The run's dataset in this process: loaded once (never downloaded: the driver did that)."""
    key = _dataset_key(config)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(
            config.dataset, config.data_root, image_size=config.image_size, download=False
        )
    return _DATASETS[key]
