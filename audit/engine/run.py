"""What every task gets: the frozen config, the loaded dataset and the run directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.core.config import RunConfig
from audit.core.data import ImageDataset, Split, load_dataset
from audit.core.models import NormalizedClassifier, build_model, load_weights
from audit.core.store import RunDir
from audit.core.training import retrain
from audit.engine.keys import RowCache, as_json
from generators.base import GenerationRequest


@dataclass
class Run:
    """One task's view of the run. A task runs in the driver's process (serial) or in a worker
    (Ray); either way it gets its own Run, so its written files and timings are its own."""

    config: RunConfig
    data: ImageDataset
    store: RunDir
    timings: dict[str, float] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)  # reused stages' earlier seconds
    rows: RowCache | None = None  # the running stage's per-row cache (set by the task runner)

    def row(self, name: str, compute: Callable[[], Any], *, reads: tuple[str, ...] = ()) -> Any:
        """One row of the running stage (a release, the target, the real baseline): its recorded
        result if an earlier run computed it under the same key, else compute() now. reads: the
        run-directory files this row's work reads beyond the stage's own inputs."""
        if self.rows is None:
            return as_json(compute())
        return self.rows.get(name, reads, compute)

    def seconds(self, stage: str) -> float:
        """What a stage cost: this run's time, or the recorded time of a reused stage."""
        return self.timings.get(stage) or self.recorded.get(stage, 0.0)

    def split(self) -> Split:
        arrays = self.store.read_npz("split.npz")
        return Split(arrays["members"], arrays["nonmembers"], arrays["test"])

    def new_model(self, stream: str) -> NormalizedClassifier:
        return build_model(
            self.config.model,
            channels=self.data.channels,
            num_classes=len(self.data.classes),
            seed=self.config.seed,
            stream=stream,
            image_size=self.data.image_size,
        )

    def retrain(self, images: np.ndarray, labels: np.ndarray, stream: str) -> NormalizedClassifier:
        """A fresh model trained on (images, labels) with the run's utility recipe."""
        c = self.config
        return retrain(
            images,
            labels,
            model_name=c.model,
            num_classes=len(self.data.classes),
            cfg=c.utility,
            seed=c.seed,
            stream=stream,
            device=c.device,
        )

    def target(self) -> NormalizedClassifier:
        return self.saved_model("target.pt")

    def saved_model(self, name: str) -> NormalizedClassifier:
        """A classifier this run saved (target.pt, models/<row>.pt)."""
        model = self.new_model("saved")
        load_weights(model, str(self.store.path(name)), model_name=self.config.model)
        return model.eval()

    def generation_request(
        self,
        teacher: NormalizedClassifier,
        images: np.ndarray,
        labels: np.ndarray,
        **settings: Any,
    ) -> GenerationRequest:
        """A request for this run's data shape and settings: the teacher, the private records
        (images, labels) generators train on, and any field to override (seed, ks, epsilons,
        resume, on_set)."""
        c, data = self.config, self.data
        fields: dict[str, Any] = {
            "ks": c.k,
            "epsilons": c.epsilon,
            "seed": c.seed,
            **settings,
        }
        return GenerationRequest(
            teacher=teacher,
            n_images=c.n_synthetic,
            num_classes=len(data.classes),
            channels=data.channels,
            image_size=data.image_size,
            device=c.device,
            classes=data.classes,
            private_images=images,
            private_labels=labels,
            **fields,
        )

    def releases(self) -> list[dict]:
        return list(self.store.read_json("generate.json")["releases"])


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
