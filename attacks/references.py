"""Reference pipelines for LiRA/RMIA (`--mia-refs N`).

Each reference repeats the audited pipeline on a random half of the members + non-members pool:
train a reference target with the target's recipe -> BN-synthesise from it with the same generator
settings -> retrain one model per K with the utility recipe. Every pool record is IN for exactly
N // 2 references. What the attacks need is saved per reference (refs/ref<i>.npz): the IN mask,
the logits of each reference model on the pool and on the population records, and its synthetic
sets (the reference synthetic sets that calibrate the release attack).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from attacks.membership import assign_halves
from audit.models import NormalizedClassifier
from audit.pipeline import Run, release_setting
from audit.seeding import derive_seed, numpy_rng
from audit.store import row_name, row_of
from audit.training import predict_logits, train_classifier
from generators.base import get_generator

log = logging.getLogger(__name__)

TARGET_ROW = "target"


@dataclass(frozen=True)
class AttackRecords:
    """Who is attacked: the pool (members + non-members, the records reference models train on),
    the candidates scored (every member and every non-member, each side capped at
    mia_candidates) and the population records (from the test split; no model trains on
    them)."""

    pool: np.ndarray  # dataset indices, sorted
    pool_is_member: np.ndarray
    candidates: np.ndarray  # positions in pool
    population: np.ndarray  # dataset indices


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


def reference_size_note(n_members: int, n_nonmembers: int) -> str | None:
    """Why LiRA/RMIA may mislead when the reference models do not see as many records as the
    target did (they train on half the pool), or None when they do."""
    if n_members == n_nonmembers:
        return None
    return (
        f"reference targets train on half the pool ({(n_members + n_nonmembers) // 2} records), "
        f"the target on its {n_members} members: LiRA and RMIA assume models of the same "
        "training-set size; give equal --max-members and --max-nonmembers"
    )


def reference_rows(run: Run) -> list[dict]:
    """The releases a reference pipeline can reproduce (not external sets)."""
    return [r for r in run.releases() if r["generator"] != "external"]


def estimate_seconds(run: Run, n_references: int) -> float:
    """Seconds for n reference pipelines, from this run's own stage timings."""
    c, t = run.config, run.timings
    n_retrained = c.utility_seeds * (len(run.releases()) + 1)
    per_retrain = run.seconds("utility") / max(n_retrained, 1)
    generate = sum(t.get(f"generate.{g}", 0.0) for g in c.generators if g != "external")
    generate = generate or run.seconds("generate")  # a reused stage has no per-generator times
    if c.weights:  # no measured target training: scale the retraining speed per image-epoch
        records = len(attack_records(run).pool) / 2
        per_image_epoch = per_retrain / max(c.utility.epochs * c.n_synthetic, 1)
        target = per_image_epoch * c.target.epochs * records
    else:
        target = run.seconds("target")
    return n_references * (target + generate + per_retrain * len(reference_rows(run)))


def stage_mia_refs(run: Run) -> None:
    c, data = run.config, run.data
    n = c.mia_refs
    if n == 0:
        run.store.write_json("refs.json", {"n_references": 0})
        return
    records = attack_records(run)
    keep = assign_halves(len(records.pool), n, numpy_rng(c.seed, "mia", "reference-halves"))
    rows = reference_rows(run)
    n_members = int(records.pool_is_member.sum())
    size_note = reference_size_note(n_members, len(records.pool) - n_members)
    if size_note:
        log.warning("[mia_refs] %s", size_note)
    log.info(
        "[mia_refs] %d reference pipelines (a target on half of %d records, each generator "
        "trained on the same half, %d retrainings each): about %.1f min, estimated from this "
        "run's stage timings",
        n,
        len(records.pool),
        len(rows),
        estimate_seconds(run, n) / 60,
    )
    for i in range(n):
        start = time.perf_counter()
        train_idx = records.pool[keep[i]]
        model = run.new_model(f"reference-{i}-target")
        train_classifier(
            model,
            data.images[train_idx],
            data.labels[train_idx],
            c.target,
            seed=c.seed,
            stream=f"reference-{i}-target",
            device=c.device,
            desc=f"reference {i} target",
        )
        arrays: dict[str, np.ndarray] = {"keep": keep[i]}
        arrays.update(_logits(run, model, TARGET_ROW, records))
        for name in sorted({r["generator"] for r in rows}):
            request = run.generation_request(
                model,
                data.images[train_idx],
                data.labels[train_idx],
                seed=derive_seed(c.seed, "reference", i),
            )
            generator = get_generator(name, c)
            for key, synthetic in generator.generate(request).items():
                row = row_name(name, *release_setting(generator.axis, key))
                arrays[f"images_{row}"] = synthetic.images
                arrays[f"labels_{row}"] = synthetic.labels
                retrained = run.retrain(synthetic.images, synthetic.labels, f"reference-{i}-{row}")
                arrays.update(_logits(run, retrained, row, records))
        run.store.write_npz(f"refs/ref{i}.npz", **arrays)
        seconds = round(time.perf_counter() - start, 3)
        run.timings[f"mia_refs.ref{i}"] = seconds  # config.json: results stay deterministic
        log.info("[mia_refs] reference %d/%d done in %.1f s", i + 1, n, seconds)
    run.store.write_json(
        "refs.json",
        {
            "n_references": n,
            "rows": [TARGET_ROW, *(row_of(r) for r in rows)],
            "pool_size": len(records.pool),
            "size_note": size_note,
        },
    )


SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dy, dx) in pixels; (0, 0) first


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 NHWC images moved by (dy, dx) pixels, the uncovered border black (like the training
    crop's zero padding)."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def query_views(images: np.ndarray, *, augment: bool, hflip: bool) -> list[np.ndarray]:
    """LiRA's queries of each record (Carlini et al. 2022, augmented queries): the record, then
    copies shifted one pixel each way and, where mirrored images are valid, the mirrored copies
    of all of them. The first view is the record itself."""
    if not augment:
        return [images]
    views = [shifted(images, dy, dx) for dy, dx in SHIFTS]
    return views + [view[:, :, ::-1] for view in views] if hflip else views


def query_logits(run: Run, model: NormalizedClassifier, images: np.ndarray) -> np.ndarray:
    """(queries, records, classes): the model's logits on every query view of the images."""
    c = run.config
    views = query_views(images, augment=c.mia_augment, hflip=c.target.hflip)
    return np.stack(
        [predict_logits(model, np.ascontiguousarray(v), device=c.device).numpy() for v in views]
    )


def _logits(
    run: Run, model: NormalizedClassifier, row: str, records: AttackRecords
) -> dict[str, np.ndarray]:
    device = run.config.device
    return {
        f"logits_{row}": query_logits(run, model, run.data.images[records.pool]),
        f"population_logits_{row}": predict_logits(
            model, run.data.images[records.population], device=device
        ).numpy(),
    }


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
