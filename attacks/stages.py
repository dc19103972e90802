"""Attack stages, registered into audit.pipeline's stage list (imported by the pipeline)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attacks.metrics import AttackMetrics, evaluate_attack
from attacks.release import penultimate_features, release_scores
from audit.pipeline import Run, Stage, register_stage
from audit.seeding import numpy_rng
from audit.store import row_name

log = logging.getLogger(__name__)


def metrics_summary(m: AttackMetrics) -> dict[str, Any]:
    return {
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "tpr_at_0.1%fpr": m.tpr_at_fpr[0.001],
        "tpr_at_1%fpr": m.tpr_at_fpr[0.01],
        "balanced_accuracy": m.balanced_accuracy,
        "eps_lower": m.eps_lower,
        "n_members": m.n_members,
        "n_nonmembers": m.n_nonmembers,
    }


def stage_mia_release(run: Run) -> None:
    """GAN-Leaks-style attack on each release: equal numbers of members and non-members."""
    c, data, split = run.config, run.data, run.split()
    rng = numpy_rng(c.seed, "mia-release", "candidates")
    n = min(len(split.members), len(split.nonmembers), c.mia_candidates)
    chosen = np.concatenate(
        [
            np.sort(rng.choice(split.members, n, replace=False)),
            np.sort(rng.choice(split.nonmembers, n, replace=False)),
        ]
    )
    candidates = data.images[chosen]
    teacher = run.target()
    candidate_features = penultimate_features(teacher, candidates, device=c.device)
    report: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    for release in run.releases():
        name = row_name(release["generator"], release["k"])
        synthetic = run.store.read_npz(release["path"])["images"]
        scores = release_scores(
            candidates,
            synthetic,
            candidate_features=candidate_features,
            synthetic_features=penultimate_features(teacher, synthetic, device=c.device),
            device=c.device,
        )
        per_distance = {
            distance: evaluate_attack(
                s[:n], s[n:], rng=numpy_rng(c.seed, "mia-release", "bootstrap", name, distance)
            )
            for distance, s in scores.items()
        }
        report[name] = {d: metrics_summary(m) for d, m in per_distance.items()}
        columns[name] = {  # the worst case over the distances
            "mia_release_auc": max(m.auc for m in per_distance.values()),
            "mia_release_tpr_at_1fpr": max(m.tpr_at_fpr[0.01] for m in per_distance.values()),
            "mia_release_eps_lower": max(m.eps_lower for m in per_distance.values()),
        }
        run.store.write_npz(
            f"mia/release-{name}.npz",
            candidates=chosen,
            is_member=np.r_[np.ones(n, bool), np.zeros(n, bool)],
            **{f"score_{d}": s for d, s in scores.items()},
        )
        log.info(
            "[mia_release] %s: AUC %s",
            name,
            ", ".join(f"{d} {m.auc:.3f}" for d, m in per_distance.items()),
        )
    run.store.write_json("mia_release.json", {"attacks": report, "n_candidates_each": n})
    run.store.write_json("columns/mia_release.json", columns)


_REGISTERED = False


def register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        register_stage(Stage("mia_release", stage_mia_release))
        _REGISTERED = True


register()
