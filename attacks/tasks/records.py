"""Who the membership attacks score and what the reference pipelines left for them, read from
this run (the pure half, the records' type and the query views, is attacks/references.py)."""

from __future__ import annotations

import numpy as np

from attacks.references import AttackRecords, query_views
from audit.core import layout
from audit.core.models import NormalizedClassifier
from audit.core.seeding import numpy_rng
from audit.core.training import predict_logits
from audit.engine.context import TaskContext
from generators.registry import plugin


def attack_records(ctx: TaskContext) -> AttackRecords:
    """Who the membership attacks score, drawn the same way (seeded) by every task that asks.

    Args:
        ctx: the task's context (config, data, run directory).

    Returns:
        The pool (members + non-members, sorted dataset indices) with its member mask; the
        candidates (positions in the pool: up to `mia_candidates` members, then up to as many
        non-members, each side sorted); and up to `mia_candidates` population records (sorted
        dataset indices from the test split).
    """
    c, split = ctx.config, ctx.split()
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


def reference_rows(ctx: TaskContext) -> list[dict]:
    """The releases a reference pipeline can reproduce (not external sets).

    Args:
        ctx: the task's context (config, data, run directory).

    Returns:
        generate.json's release entries whose generator is reproducible, in the config's order.
    """
    return [r for r in ctx.releases() if plugin(r["generator"]).reproducible]


def query_logits(ctx: TaskContext, model: NormalizedClassifier, images: np.ndarray) -> np.ndarray:
    """(queries, records, classes): the model's logits on every query view of the images.

    Args:
        ctx: the task's context (config, data, run directory).
        model: the classifier to query (run on `device` in eval mode).
        images: (N, H, W, C) uint8 records, pixels in [0, 255].

    Returns:
        (n_views, N, num_classes) float32 logits; n_views is 1, 5 or 10 (query_views, from
        `mia_augment` and the target section's hflip).
    """
    c = ctx.config
    views = query_views(images, augment=c.mia_augment, hflip=c.target.hflip)
    return np.stack(
        [predict_logits(model, np.ascontiguousarray(v), device=c.device).numpy() for v in views]
    )


def load_references(ctx: TaskContext, row: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(keep (refs, pool), logits (refs, queries, pool, classes), population logits) for a row, or
    None when no reference pipeline covers it.

    Args:
        ctx: the task's context (config, data, run directory).
        row: a results row ("target", "bn_match-k200"...).

    Returns:
        keep: (n_refs, pool) bool, True where reference i trained on the pool record; logits:
        (n_refs, n_views, pool, num_classes) float32, each reference model's logits on every
        query view of the pool; population logits: (n_refs, n_population, num_classes) float32.
        None when --mia-refs is 0 or the row is not reproducible (refs.json's rows).
    """
    info = ctx.store.read_json(layout.REFS)
    if info["n_references"] == 0 or row not in info["rows"]:
        return None
    refs = [ctx.store.read_npz(layout.reference(i)) for i in range(info["n_references"])]
    return (
        np.stack([r["keep"] for r in refs]),
        np.stack([r[f"logits_{row}"] for r in refs]),
        np.stack([r[f"population_logits_{row}"] for r in refs]),
    )
