"""The fidelity stage: Fréchet distances of each release and the `real` row
(audit/core/fidelity.py)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.release import penultimate_features
from audit.core import layout
from audit.core.fidelity import frechet_distance, inception_features, load_inception
from audit.core.layout import row_of
from audit.core.seeding import numpy_rng
from audit.engine.context import TaskContext
from audit.engine.spec import ATTACK, Stage

log = logging.getLogger(__name__)


def stage_fidelity(ctx: TaskContext) -> None:
    c, data = ctx.config, ctx.data
    privacy = ctx.store.read_json(layout.PRIVACY)
    holdout = data.images[np.asarray(privacy["holdout_nonmembers"], dtype=np.int64)]
    real = np.asarray(privacy["reference_nonmembers"], dtype=np.int64)
    evaluator = ctx.saved_model(layout.POPULATION_MODEL)
    sets = {row_of(r): ctx.store.read_npz(r["path"])["images"] for r in ctx.releases()}
    sizes = [len(images) for images in sets.values()] or [len(real)]
    n_real = min(len(real), max(sizes))
    chosen = numpy_rng(c.seed, "fidelity", "real").choice(real, n_real, replace=False)
    sets["real"] = data.images[np.sort(chosen)]
    extractors: dict[str, Any] = {
        "fd_eval": lambda images: penultimate_features(evaluator, images, device=c.device).numpy()
    }
    if c.inception_weights:
        inception = load_inception(c.inception_weights, c.device)
        extractors["fid_inception"] = lambda images: inception_features(
            inception, images, device=c.device
        )
    columns: dict[str, dict[str, float | int]] = {row: {} for row in sets}
    for column, extract in extractors.items():
        reference = extract(holdout)
        for row, images in sets.items():
            columns[row][column] = frechet_distance(extract(images), reference)
    for row in sets:
        columns[row]["fd_n_images"] = len(sets[row])
        log.info(
            "[fidelity] %s: %s",
            row,
            ", ".join(f"{k} {v:.4g}" for k, v in columns[row].items() if k != "fd_n_images"),
        )
    ctx.store.write_json(
        layout.summary("fidelity"),
        {"n_holdout": len(holdout), "real_index": chosen, "rows": columns},
    )
    ctx.store.write_json(layout.stage_columns("fidelity"), columns)


STAGE = Stage(
    "fidelity",
    stage_fidelity,
    config=(*ATTACK, "inception_weights"),
    reads=("split", "generate", "privacy", "population_model"),
)
