"""BN-statistics matching: optimise Gaussian noise until each BN layer's statistics on the synthetic
images match the layer's running statistics (papers/bn-synthetic-dataset-paper.txt).

Default loss, the paper's: for every group of ``group_size`` images,
``sum_l ||mu_l(x) - mu_l||_2 + ||var_l(x) - var_l||_2 + CE(f(x), y)``, with mu_l and var_l the
biased mean and variance of the BN layer's *input* over (images, H, W) of the group. Variants
(per-image statistics, std instead of variance, squared norms, a TV prior, projection onto valid
pixels after each step) are named options in ``BNMatchConfig``.

Why ``clamp_pixels`` matters to an audit: the paper optimises without bounds, so part of the image
leaves [0, 1] and is clipped on release, which moves its statistics away from the teacher's.
``bn_stat_distance`` in the results measures the released images for this reason (the README
gives figures with the command that measured them).

Two properties the audit relies on:

* One trajectory serves every K. Images are snapshotted after each requested step count, so
  ``--k 500 2000`` costs 2,000 steps. A snapshot at K equals a separate K-step run with the same
  seed because nothing in a step depends on the total number of steps: the learning rate is
  constant (no schedule over K), there is no early stopping, and the noise is drawn once up front.
  A schedule that depends on the final K would break this equality.
* Many groups run in one forward pass. The teacher is in eval mode, so every image's forward pass
  is independent of the others; statistics are reduced per group, the total loss is the sum of
  the per-group losses and Adam is elementwise, so each image's update is the one a separate run
  of its group would make (equal up to floating-point summation order).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from audit.core.bn import (
    Targets,
    bn_inputs,
    bn_statistics_distance,
    frozen,
    group_losses,
    group_matrix,
)
from audit.core.columns import NEUTRAL, ROW, Column
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier, quantise
from audit.core.sections import BNMatchConfig
from audit.core.seeding import torch_generator
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.bn_memory import groups_within_budget

log = logging.getLogger(__name__)

DIVERGENCE_LIMIT = 1e4  # |normalised pixel| beyond this is divergence, not an image


@dataclass(frozen=True)
class TrajectoryState:
    """Everything the optimisation carries from one step to the next, for all images: the
    normalised images and Adam's moments after `step` steps. Resuming from it gives the same
    steps as never having stopped (on the CPU bit for bit; see tests/test_bn_match.py)."""

    step: int
    z: np.ndarray  # float32 (N, C, H, W)
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays, for a SyntheticSet checkpoint (saved in an .npz).

        Returns:
            "step": 0-d int64; "z", "exp_avg", "exp_avg_sq": (N, C, H, W) float32, the
            normalised images and Adam's first and second moments.
        """
        return {
            "step": np.asarray(self.step, dtype=np.int64),
            "z": self.z,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TrajectoryState:
        """The state back from what `to_arrays` wrote (a resumed run's checkpoint).

        Args:
            arrays: "step" (0-d int), "z", "exp_avg" and "exp_avg_sq" ((N, C, H, W) float32).

        Returns:
            The state, sharing the arrays (no copy).
        """
        return cls(int(arrays["step"]), arrays["z"], arrays["exp_avg"], arrays["exp_avg_sq"])


@dataclass
class BNMatchResult:
    snapshots: dict[int, np.ndarray]  # K -> uint8 NHWC, as released
    labels: np.ndarray  # assigned (balanced) labels
    loss_at: dict[int, float]  # K -> mean per-group loss of the images after K steps
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, mean group loss)
    states: dict[int, TrajectoryState] = field(default_factory=dict)  # K -> state after K steps


def balanced_labels(n_images: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., C-1, 0, 1, ...: every group whose size is a multiple of C is exactly balanced.

    Args:
        n_images: the synthetic set's size, >= 0.
        num_classes: C, >= 1.

    Returns:
        (n_images,) int64, labels in [0, num_classes).
    """
    return (np.arange(n_images) % num_classes).astype(np.int64)


def bn_match(
    teacher: NormalizedClassifier,
    *,
    labels: np.ndarray,
    ks: tuple[int, ...],
    cfg: BNMatchConfig,
    image_shape: tuple[int, int, int],
    seed: int,
    device: str,
    progress: bool = True,
    start: TrajectoryState | None = None,
    on_snapshot: Callable[[int, np.ndarray, float, TrajectoryState], None] | None = None,
    targets: Targets | None = None,
) -> BNMatchResult:
    """Run the optimisation once to max(ks) and snapshot the released (uint8) images at each K,
    with the state there (`states`). start: go on from an earlier run's state at a step below
    every K instead of from the seed's noise. on_snapshot(K, images, loss, state) is called as
    soon as every group has reached K, so a caller can save K before the larger ones finish.

    Args:
        teacher: the classifier with BatchNorm layers whose running statistics are matched;
            moved to device and frozen (eval mode, no parameter gradients) while optimising.
        labels: (N,) int64 numpy, the class each synthetic image is optimised towards.
        ks: steps to snapshot at, positive ints (sorted and deduplicated here).
        cfg: the `bn` section (group size, lr, loss variant, clamping, memory budget).
        image_shape: (C, H, W) of one image.
        seed: seeds the starting Gaussian noise (drawn on the CPU, the same on any device).
        device: torch device to optimise on.
        progress: True: a tqdm bar (tqdm hides it off a terminal); False: none.
        start: an earlier run's state at a step below every K; None starts from the noise.
        on_snapshot: called (K, (N, H, W, C) uint8 images, mean per-group loss after K steps,
            state at K) once per K; None: only the result carries the sets.
        targets: the layers to match and each one's (C,) mean and variance (a DP teacher's
            released statistics, generators/bn_match_dp.py); None: every BN layer's running
            statistics.

    Returns:
        snapshots: K -> (N, H, W, C) uint8 released images; labels as given; loss_at: K -> mean
        per-group loss; history: (step, mean group loss) at every check; states: K -> state.

    Raises:
        AuditError: no K or a K <= 0; the teacher has no BatchNorm layer; the loss or the
            images became NaN/inf or |normalised pixel| exceeded DIVERGENCE_LIMIT.
        ValueError: the smallest K is not above start.step, or start.z is not (N, C, H, W).
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] <= 0:
        raise AuditError(f"K must be positive integers, got {ks}")
    first_step = start.step if start is not None else 0
    if ks[0] <= first_step:
        raise ValueError(f"cannot resume at step {first_step} for K={ks[0]}")
    n_images = len(labels)
    n_groups = math.ceil(n_images / cfg.group_size)
    group_index = torch.arange(n_images) // cfg.group_size
    per_pass = cfg.groups_per_pass or groups_within_budget(
        teacher, image_shape, cfg.group_size, cfg.pass_memory_budget, device=device
    )
    per_pass = min(per_pass, n_groups)
    if per_pass < n_groups:
        log.info(
            "[generate] bn_match: %d of %d groups per pass (pass memory budget %.1f GiB)",
            per_pass,
            n_groups,
            cfg.pass_memory_budget / 2**30,
        )
    if start is not None:
        if start.z.shape != (n_images, *image_shape):
            raise ValueError(f"a checkpoint of shape {start.z.shape} cannot resume this run")
        initial = torch.from_numpy(start.z)
    else:
        # all noise drawn up front on the CPU: the same seed gives the same start on any device
        # and for any grouping into passes
        initial = torch.randn(
            (n_images, *image_shape), generator=torch_generator(seed, "bn_match", "noise")
        )
    y_all = torch.from_numpy(labels).to(device)
    # per K, the passes' parts until the last pass completes it, then the whole set (joined once)
    snapshots: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    state_parts: dict[int, list[tuple[np.ndarray, ...]]] = {k: [] for k in ks}
    released: dict[int, np.ndarray] = {}
    states: dict[int, TrajectoryState] = {}
    loss_at: dict[int, list[float]] = {k: [] for k in ks}
    history: dict[int, list[float]] = {}
    teacher = teacher.to(device)
    # valid pixels [0, 1] in the teacher's normalised units, per channel (for clamp_pixels)
    low = teacher.normalize(torch.zeros(1, device=device)).detach()
    high = teacher.normalize(torch.ones(1, device=device)).detach()
    bar = tqdm(
        total=(ks[-1] - first_step) * math.ceil(n_groups / per_pass),
        desc="bn_match",
        unit="step",
        disable=None if progress else True,
        leave=False,
    )
    layers = None if targets is None else list(targets)
    with bar, frozen(teacher), bn_inputs(teacher.net, layers) as records:
        for first_group in range(0, n_groups, per_pass):
            groups = range(first_group, min(first_group + per_pass, n_groups))
            mask = (group_index >= groups.start) & (group_index < groups.stop)
            z = initial[mask].to(device).requires_grad_(True)
            y = y_all[mask.to(device)]
            averaging = group_matrix((group_index[mask] - groups.start).to(device), len(groups))
            optimizer = torch.optim.Adam([z], lr=cfg.lr)
            if start is not None:
                _restore_adam(optimizer, start, mask.numpy())
            for step in range(first_step + 1, ks[-1] + 1):
                records.clear()
                logits = teacher.net(z)
                losses = group_losses(records, logits, y, z, averaging, cfg, targets)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                if cfg.clamp_pixels:
                    with torch.no_grad():
                        z.copy_(torch.maximum(torch.minimum(z, high), low))
                bar.update(1)
                if step % cfg.check_every == 0 or step in loss_at or step == 1:
                    mean_loss = _checked_mean(losses, z, step)
                    history.setdefault(step, []).append(mean_loss * len(groups))
                    if step in loss_at:  # the loss of the images released at K: after step K
                        with torch.no_grad():
                            records.clear()
                            after = group_losses(
                                records, teacher.net(z), y, z, averaging, cfg, targets
                            )
                        loss_at[step].append(float(after.mean()) * len(groups))
                        snapshots[step].append(quantise(teacher, z))
                        moments = optimizer.state[z]
                        state_parts[step].append(  # copies: on the CPU .numpy() would alias
                            tuple(  # tensors the next steps update in place
                                t.detach().cpu().numpy().copy()
                                for t in (z, moments["exp_avg"], moments["exp_avg_sq"])
                            )
                        )
                        if groups.stop == n_groups:  # the last pass: every group is at K
                            released[step] = np.concatenate(snapshots.pop(step))
                            states[step] = _joined(step, state_parts.pop(step))
                            if on_snapshot is not None:
                                loss = sum(loss_at[step]) / n_groups
                                on_snapshot(step, released[step], loss, states[step])
    records.clear()
    return BNMatchResult(
        snapshots=released,
        labels=labels,
        loss_at={k: sum(v) / n_groups for k, v in loss_at.items()},
        history=[(s, sum(v) / n_groups) for s, v in sorted(history.items())],
        states=states,
    )


def _joined(step: int, parts: list[tuple[np.ndarray, ...]]) -> TrajectoryState:
    """The state of all images from the passes' parts."""
    z, exp_avg, exp_avg_sq = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return TrajectoryState(step, z, exp_avg, exp_avg_sq)


def _restore_adam(optimizer: torch.optim.Adam, start: TrajectoryState, mask: np.ndarray) -> None:
    """Adam's state for this pass's images as it was after start.step steps."""
    saved = {
        "state": {
            0: {
                "step": torch.tensor(float(start.step), dtype=torch.float32),
                "exp_avg": torch.from_numpy(start.exp_avg[mask]),
                "exp_avg_sq": torch.from_numpy(start.exp_avg_sq[mask]),
            }
        },
        "param_groups": optimizer.state_dict()["param_groups"],
    }
    optimizer.load_state_dict(saved)


def _checked_mean(losses: torch.Tensor, z: torch.Tensor, step: int) -> float:
    """One device sync: the mean group loss, or an error if the loss or the images blew up."""
    mean_loss, z_max = torch.stack([losses.detach().mean(), z.detach().abs().amax()]).tolist()
    if not (math.isfinite(mean_loss) and math.isfinite(z_max)):
        raise AuditError(
            f"BN matching produced NaN/inf at step {step} (loss {mean_loss}); "
            "check the teacher's weights or lower the BN learning rate"
        )
    if z_max > DIVERGENCE_LIMIT:
        raise AuditError(
            f"BN matching diverged at step {step} (|pixel| {z_max:.3g} in normalised units); "
            "lower the BN learning rate"
        )
    return float(mean_loss)


class BNMatchGenerator:
    def __init__(self, config: BNMatchConfig) -> None:
        self.config = config

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """BN-match request.n_images images from the teacher, released at every requested K.

        Args:
            request: the teacher, the Ks, n_images, num_classes, image shape, seed and device;
                resume (a checkpoint to go on from) and on_set (called per K) where given.

        Returns:
            K -> SyntheticSet of uint8 NHWC images with balanced int64 labels, info "bn_loss"
            and "bn_stat_distance" (both >= 0) and the state at K as its checkpoint.

        Raises:
            AuditError: as `bn_match` (no BatchNorm layer, a K <= 0, divergence).
            ValueError: as `bn_match` (a resume checkpoint that does not fit the request).
        """
        labels = balanced_labels(request.n_images, request.num_classes)
        sets: dict[SetKey, SyntheticSet] = {}

        def emit(k: int, images: np.ndarray, loss: float, state: TrajectoryState) -> None:
            distance = bn_statistics_distance(
                request.teacher, images, group_size=self.config.group_size, device=request.device
            )
            sets[k] = SyntheticSet(
                images=images,
                labels=labels,
                info={"bn_loss": loss, "bn_stat_distance": distance},
                checkpoint=state.to_arrays(),
            )
            if request.on_set is not None:
                request.on_set(k, sets[k])

        bn_match(
            request.teacher,
            labels=labels,
            ks=request.ks,
            cfg=self.config,
            image_shape=(request.channels, request.image_size, request.image_size),
            seed=request.seed,
            device=request.device,
            start=None if request.resume is None else TrajectoryState.from_arrays(request.resume),
            on_snapshot=emit,
        )
        return sets


# from the default digits run on the reference 2-core CPU: 73.8 s for 1,000 steps of 100 images
IMAGE_STEP_S = 7.4e-4  # per synthetic image and step, at 16x16 px


def estimated_seconds(config: RunConfig, members: int) -> float:
    """One trajectory to the largest K (the smaller Ks are its snapshots).

    Args:
        config: the run's config (its `k` and `n_synthetic`).
        members: the private records (unused: BN matching never sees them).

    Returns:
        Estimated seconds on the reference 2-core CPU at 16x16 px, >= 0.
    """
    return IMAGE_STEP_S * max(config.k) * config.n_synthetic


# what a BN-matching row adds to the results
COLUMNS: tuple[Column, ...] = (
    Column(
        "bn_loss",
        "BN-matching loss at the row's last step (the optimised objective)",
        ">= 0",
        NEUTRAL,
        ROW,
    ),
    Column(
        "bn_stat_distance",
        "distance of the release's BN statistics from the matched ones (bn_match: the target's "
        "running statistics at all its BN layers; bn_match_dp: the DP-released statistics at "
        "its teacher's first statistics_layers GroupNorm layers; not comparable across the two)",
        ">= 0",
        NEUTRAL,
        ROW,
    ),
)


PLUGIN = GeneratorPlugin(
    "bn_match",
    axis="k",
    build=lambda config: BNMatchGenerator(config.bn),
    settings=("bn",),
    cost=estimated_seconds,
    from_teacher=True,
    columns=COLUMNS,
    summary="BN-statistics matching from the target, one set per K",
)
