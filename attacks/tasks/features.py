"""Feature inversion with noisy features and the HCR bounds at the same noise scales, for the
target and each retrained model."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from attacks.feature_inversion import feature_inversion
from attacks.hcr import hcr_bounds
from attacks.penultimate import split_classifier
from audit.core import layout
from audit.core.bn import frozen
from audit.core.seeding import numpy_rng, torch_generator
from audit.core.training import to_tensor
from audit.engine.context import TaskContext
from audit.engine.costs import scaled
from audit.engine.spec import ATTACK, Plan, Stage, Task

log = logging.getLogger(__name__)

# seconds a row costs on the reference CPU at 16x16 px per 100 decoder steps
ROW_S = 6.3


def features_tasks(plan: Plan) -> list[Task]:
    """One feature-inversion task per attacked model (the target and each retrained model).

    With `features.attacker_data` "synthetic" the attacker's decoder trains on the row's own
    release (the target: the last planned release); otherwise on the non-members.

    Args:
        plan: the run's plan (config, planned releases, data size for the cost estimate).

    Returns:
        The tasks, named by row, with args (row, weights path, release path or None); cost:
        ROW_S seconds per 100 `features.decoder_steps`, scaled to the data's pixel count.
    """
    releases = plan.releases
    tasks = []
    for row, path in plan.attacked_models().items():
        source = None  # the attacker's training images: non-members, or a release
        if plan.config.features.attacker_data == "synthetic" and releases:
            release = next((r for r in releases if r.row == row), None)
            source = (release or releases[-1]).path
        tasks.append(
            Task(
                "features",
                row,
                invert_features,
                (row, path, source),
                reads=(path,) if source is None else (path, source),
                cost=scaled(plan, ROW_S * plan.config.features.decoder_steps / 100),
            )
        )
    return tasks


def choose_victims(ctx: TaskContext) -> tuple[np.ndarray, np.ndarray]:
    """(members whose features are inverted, the first of them whose HCR bounds are computed).

    Args:
        ctx: the task's context (config, data, run directory).

    Returns:
        (n_victims,) int64 sorted dataset indices, min(`features.victims`, members) members
        drawn with a seeded generator; and their first `features.hcr_images` (at most all).
    """
    c, split = ctx.config, ctx.split()
    f = c.features
    rng = numpy_rng(c.seed, "features", "victims")
    victims = np.sort(rng.choice(split.members, min(f.victims, len(split.members)), replace=False))
    return victims, victims[: f.hcr_images]


def write_features(ctx: TaskContext, results: dict[str, Any]) -> None:
    """The stage's combine step: write features.json (every row's report and the victim counts).

    Args:
        ctx: the task's context (config, data, run directory).
        results: row -> what invert_features returned, as read back from JSON.
    """
    f = ctx.config.features
    victims, hcr_victims = choose_victims(ctx)
    for row, report in results.items():
        log.info(
            "[features] %s: reconstruction SSIM %s; HCR median std %s",
            row,
            " ".join(f"{s['scale']}:{s['ssim_mean']:.2f}" for s in report["scales"]),
            " ".join(
                f"{s['scale']}:{s['hcr_median_std']:.3g}"
                for s in report["scales"]
                if "hcr_median_std" in s
            ),
        )
    ctx.store.write_json(
        layout.summary("features"),
        {
            "models": results,
            "attacker_data": f.attacker_data,
            "n_victims": len(victims),
            "n_hcr_images": len(hcr_victims),
        },
    )


def invert_features(
    ctx: TaskContext, row: str, path: str, attacker_source: str | None
) -> dict[str, Any]:
    """Feature inversion and HCR bounds for one saved model; arrays to features/<row>.npz.

    The arrays: "victims", "hcr_victims", "reconstructions_<scale>" (V, H, W, C) uint8 and,
    per scale with sigma > 0, "hcr_std_<scale>" (hcr_images * C * H * W,) float64 >= 0.

    Args:
        ctx: the task's context (config, data, run directory).
        row: the attacked model's row ("target", "bn_match-k200"...).
        path: its saved weights in the run directory (layout.TARGET or layout.model(row)).
        attacker_source: a release's .npz in the run directory whose images the decoder
            trains on; None: the non-members.

    Returns:
        "feature_rms": the victims' clean-feature RMS (feature units); "scales": one dict per
        noise scale (feature_inversion's figures: scale, sigma, ssim_mean, psnr_mean...), with
        hcr_summary's keys added where sigma > 0.
    """
    c, data, split, f = ctx.config, ctx.data, ctx.split(), ctx.config.features
    victims, hcr_victims = choose_victims(ctx)
    model = ctx.saved_model(path)
    attacker_images = (
        data.images[split.nonmembers]
        if attacker_source is None
        else ctx.store.read_npz(attacker_source)["images"]
    )
    start = time.perf_counter()
    inverted = feature_inversion(
        model,
        attacker_images=attacker_images,
        victims=data.images[victims],
        eval_images=data.images[split.test],
        eval_labels=data.labels[split.test],
        scales=f.noise_scales,
        steps=f.decoder_steps,
        seed=c.seed,
        stream=f"features-{row}",
        device=c.device,
    )
    decoder_seconds = time.perf_counter() - start
    sigmas = [s["sigma"] for s in inverted["scales"] if s["sigma"] > 0]
    start = time.perf_counter()
    feature_map, _ = split_classifier(model)
    theta = model.normalize(to_tensor(data.images[hcr_victims], c.device))
    with frozen(model):
        bounds = hcr_bounds(
            feature_map,
            theta,
            sigmas,
            generator=torch_generator(c.seed, "hcr", row, device=c.device),
            draws=f.hcr_draws,
            rounds=f.hcr_rounds,
            lsqr_iters=f.hcr_lsqr_iters,
            perturbation=f.hcr_perturbation,
        )
    hcr_seconds = time.perf_counter() - start
    arrays: dict[str, np.ndarray] = {"victims": victims, "hcr_victims": hcr_victims}
    for entry in inverted["scales"]:
        scale, sigma = entry["scale"], entry["sigma"]
        arrays[f"reconstructions_{scale}"] = inverted["reconstructions"][scale].numpy()
        if sigma > 0:
            std = bounds.std_bounds[sigma].flatten().cpu().numpy().astype(np.float64)
            arrays[f"hcr_std_{scale}"] = std
            entry.update(hcr_summary(std))
    ctx.store.write_npz(layout.feature_reconstructions(row), **arrays)
    # timings go to config.json, not into results: the same inputs give the same bytes
    ctx.record_time(f"features.{row}.feature_inversion", decoder_seconds)
    ctx.record_time(f"features.{row}.hcr", hcr_seconds)
    return {"feature_rms": inverted["feature_rms"], "scales": inverted["scales"]}


def hcr_summary(std: np.ndarray, bins: int = 30) -> dict[str, Any]:
    """Median, quantiles and a log10 histogram of per-coefficient std bounds (positive part).

    Args:
        std: (n,) float64 std lower bounds >= 0 (normalised units), n >= 1.
        bins: histogram bins, >= 1.

    Returns:
        "hcr_median_std" and "hcr_quantiles" ({"0.1", "0.25", "0.5", "0.75", "0.9": value}),
        both over every bound, zeros included; "hcr_log10_histogram" ({"counts", "edges"} of
        log10 of the positive bounds; of [0] when none is positive); "hcr_zero_share": the
        share in [0, 1] of bounds <= 0.
    """
    positive = std[std > 0]
    counts, edges = np.histogram(np.log10(positive) if len(positive) else np.zeros(1), bins=bins)
    return {
        "hcr_median_std": float(np.median(std)),
        "hcr_quantiles": {str(q): float(np.quantile(std, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "hcr_log10_histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "hcr_zero_share": float((std <= 0).mean()),
    }


STAGE = Stage(
    "features",
    config=(*ATTACK, "features"),
    reads=("split", "target", "generate", "utility"),
    row_reads=("generate", "utility"),
    tasks=features_tasks,
    combine=write_features,
)
