"""Who the membership attacks score and what the reference pipelines left for them, read from
this run (the pure half, the records' type and the query views, is attacks/references.py)."""

from __future__ import annotations

import numpy as np

from attacks.references import AttackRecords, query_views
from audit.core.models import NormalizedClassifier
from audit.core.seeding import numpy_rng
from audit.core.training import predict_logits
from audit.engine.run import Run
from generators.registry import plugin


def attack_records(run: Run) -> AttackRecords:
    c, split = run.config, run.split()
    pool = np.concatenate([split.members, split.nonmembers])
    order = np.argsort(pool, kind="stable")
    pool, is_member = (
        pool[order],
        np.r_[np.ones(len(split.members), bool), np.zeros(len(split.nonmembers), bool)][order],
    )
    rng = numpy_rng(c.seed, "mia", "candidates")
    # every member and non-member up to the cap, the same records for every attack
    candidates = np.concatenate(
        [
            np.sort(rng.choice(group, min(len(group), c.mia_candidates), replace=False))
            for group in (np.flatnonzero(is_member), np.flatnonzero(~is_member))
        ]
    )
    n_population = min(len(split.test), c.mia_candidates)
    population = np.sort(
        numpy_rng(c.seed, "mia", "population").choice(split.test, n_population, replace=False)
    )
    return AttackRecords(pool, is_member, candidates, population)


def reference_rows(run: Run) -> list[dict]:
    """The releases a reference pipeline can reproduce (not external sets)."""
    return [r for r in run.releases() if plugin(r["generator"]).reproducible]


def query_logits(run: Run, model: NormalizedClassifier, images: np.ndarray) -> np.ndarray:
    """(queries, records, classes): the model's logits on every query view of the images."""
    c = run.config
    views = query_views(images, augment=c.mia_augment, hflip=c.target.hflip)
    return np.stack(
        [predict_logits(model, np.ascontiguousarray(v), device=c.device).numpy() for v in views]
    )


def load_references(run: Run, row: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(keep (refs, pool), logits (refs, queries, pool, classes), population logits) for a row, or
    None when no reference pipeline covers it."""
    info = run.store.read_json("refs.json")
    if info["n_references"] == 0 or row not in info["rows"]:
        return None
    refs = [run.store.read_npz(f"refs/ref{i}.npz") for i in range(info["n_references"])]
    return (
        np.stack([r["keep"] for r in refs]),
        np.stack([r[f"logits_{row}"] for r in refs]),
        np.stack([r[f"population_logits_{row}"] for r in refs]),
    )
