"""The canary audit's records and scores: which canaries are drawn and which coins include them,
the label-aware black-box score, the gradient canaries' coins, and one release's audit."""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks.canary import audit_scores
from audit.core.config import RunConfig
from audit.core.seeding import numpy_rng
from audit.core.similarity import nearest_neighbours
from audit.engine.context import TaskContext
from audit.tasks.split import check_canary_room
from generators.base import SyntheticSet


def choose_canaries(
    ctx: TaskContext,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, images, wrong labels, included coins) of the run's canaries.

    Args:
        ctx: the task's context (config, data, run directory).

    Returns:
        index: (m,) int64 sorted dataset indices from the test split, m = `canaries`; images:
        (m, H, W, C) uint8, pixels in [0, 255]; wrong labels: (m,) int64 in [0, classes), each
        differing from the true label; included: (m,) bool, True where the canary joins the
        private set.

    Raises:
        AuditError: `canaries` exceeds the test split's size.
    """
    c, data, split = ctx.config, ctx.data, ctx.split()
    check_canary_room(c, split)  # again: a reused split may predate a larger --canaries
    index, labels, included = draw_canaries(
        c.seed, split.test, data.labels, c.canaries, len(data.classes)
    )
    return index, data.images[index], labels, included


def draw_canaries(
    seed: int, test: np.ndarray, labels: np.ndarray, m: int, classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, wrong labels, included coins) of m canaries drawn from the test split:
    each relabelled uniformly among the other classes, each in by a fair coin (seeded).

    Args:
        seed: the run's seed (the draws use its "canaries" stream).
        test: (n_test,) int dataset indices of the test split, n_test >= m.
        labels: (N,) int true labels of the whole dataset, in [0, classes).
        m: the number of canaries, >= 0.
        classes: the number of classes, >= 2.

    Returns:
        (m,) int sorted dataset indices; (m,) int64 wrong labels in [0, classes); (m,) bool
        inclusion coins.

    Raises:
        ValueError: m exceeds len(test) (numpy's choice without replacement).
    """
    rng = numpy_rng(seed, "canaries")
    index = np.sort(rng.choice(test, m, replace=False))
    wrong = (labels[index] + rng.integers(1, classes, m)) % classes
    return index, wrong.astype(np.int64), rng.random(m) < 0.5


def label_aware_ssim(
    canaries: np.ndarray,
    labels: np.ndarray,
    release: np.ndarray,
    release_labels: np.ndarray,
    device: str,
) -> np.ndarray:
    """Each canary's SSIM to its nearest released image of the canary's label (-inf where the
    release has none of that label).

    Args:
        canaries: (m, H, W, C) uint8 canary images, pixels in [0, 255].
        labels: (m,) int the canaries' (wrong) labels.
        release: (n, H, W, C) uint8 released images, pixels in [0, 255].
        release_labels: (n,) int their labels.
        device: torch device for the SSIM search ("cpu", "cuda"...).

    Returns:
        (m,) float64 best SSIM (<= 1, higher = more similar), -inf where no released image
        has the canary's label.
    """
    scores = np.full(len(canaries), -np.inf)
    for label in np.unique(labels):
        mine, theirs = labels == label, release_labels == label
        if theirs.any():
            nearest, _ = nearest_neighbours(
                canaries[mine], release[theirs], "ssim", k=1, device=device, progress=False
            )
            scores[mine] = nearest[:, 0]
    return scores


def gradient_coins(config: RunConfig) -> np.ndarray | None:
    """The white-box gradient canaries' fair coins (None: none planted).

    Args:
        config: the run's config (its seed and `gradient_canaries` count).

    Returns:
        (gradient_canaries,) bool, True where a canary is inserted (seeded), or None when
        `gradient_canaries` is 0.
    """
    if config.gradient_canaries == 0:
        return None
    return (
        numpy_rng(config.seed, "gradient-canaries", "coins").random(config.gradient_canaries) < 0.5
    )


def audit_release(
    synthetic: SyntheticSet,
    images: np.ndarray,
    labels: np.ndarray,
    included: np.ndarray,
    coins: np.ndarray | None,
    config: RunConfig,
) -> dict[str, Any]:
    """One release's canary columns: every score it allows, its claim's p-value and status
    (the claim: the audited training's own eps_accountant, where it makes a formal one).

    Args:
        synthetic: the audit run's release (images, labels, info and, where the generator
            allows, score_records, gradient_scores and statistics_scores).
        images: (m, H, W, C) uint8 canary images, pixels in [0, 255].
        labels: (m,) int64 their wrong labels.
        included: (m,) bool, True where the canary was trained on.
        coins: (g,) bool coins of the gradient canaries; None: none planted.
        config: the run's config (device, and the dp section's delta).

    Returns:
        audit_scores' columns (eps_audit, eps_audit_max, per-score figures...) and, where the
        release states an eps_accountant, dp_claim_audited and the dp_claim_* columns
        (dp_claim_status "not formal..." where the claim is not a formal guarantee).
    """
    scores = {
        "blackbox_ssim_label": (
            label_aware_ssim(images, labels, synthetic.images, synthetic.labels, config.device),
            included,
        )
    }
    if synthetic.score_records is not None:
        scores["whitebox"] = (-synthetic.score_records(images, labels), included)
    if synthetic.gradient_scores is not None and coins is not None:
        scores["whitebox_gradient"] = (synthetic.gradient_scores, coins)
    if synthetic.statistics_scores is not None and coins is not None:
        scores["whitebox_statistics"] = (synthetic.statistics_scores, coins)
    claim = synthetic.info.get("eps_accountant")
    figures = audit_scores(scores, delta=config.dp.delta, claim=claim)
    if claim is not None:
        figures["dp_claim_audited"] = float(claim)
        if not synthetic.info.get("dp_formal", True):  # informative, never gated
            refuted = figures["dp_claim_status"] == "refuted"
            figures["dp_claim_status"] = "not formal; refuted" if refuted else "not formal"
    return figures


def describe(figures: dict[str, Any]) -> str:
    """eps_audit, how it was found, how far the audit could reach, and what it says of a claim.

    Args:
        figures: one row's canary columns (audit_release, or audit_scores for the target).

    Returns:
        One log line of text.
    """
    found = (
        f"{figures['eps_audit_score']}, {figures['canary_correct']} of "
        f"{figures['canary_guesses']} guesses right"
        if figures["canary_guesses"]
        else "no guess count refutes epsilon 0"
    )
    reach = figures["eps_audit_max"]
    text = f"eps_audit {figures['eps_audit']:.2f} ({found}; a perfect attack: {reach:.2f})"
    status = figures.get("dp_claim_status")
    if status is None:
        return text
    claim = figures["dp_claim_audited"]
    words = {
        "refuted": f"DP CLAIM REFUTED at 95%: epsilon {claim:.3g} is below the lower bound",
        "not refuted": f"claim {claim:.3g} not refuted (p = {figures['dp_claim_p']:.2g})",
        "uninformative": (
            f"uninformative about claim {claim:.3g}: at or above what this audit can refute"
        ),
        "not formal": f"claim {claim:.3g} is not a formal guarantee; not checked",
        "not formal; refuted": (
            f"claim {claim:.3g} is not a formal guarantee, and the audit refutes it (95%)"
        ),
    }
    return f"{text}; {words[status]}"
