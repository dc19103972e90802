"""The run configuration's sections (target and utility training, BN matching, the VAEs, DP-SGD,
the federation, the attacks) and how a setting's value is typed: the schema that
audit/core/config.py's RunConfig is made of."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from audit.core.errors import AuditError

Statistics = Literal["batch", "image"]


Spread = Literal["var", "std"]


Norm = Literal["l2", "squared"]


@dataclass(frozen=True)
class TrainConfig:
    """One recipe for every classifier the suite trains: target, utility, later reference models."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1  # peak SGD learning rate, cosine-annealed to 0 over all steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2  # px of random translation (pad + random crop), 0 = off
    hflip: bool = False  # resolved per dataset: digits are not mirror-symmetric, CIFAR is
    bf16: bool = True  # bf16 autocast when training on CUDA (no effect on CPU)


@dataclass(frozen=True)
class BNMatchConfig:
    """BN-statistics matching. The defaults are the paper's loss (see generators/bn_match.py)."""

    group_size: int = 250  # images whose statistics are matched together (the paper's batch)
    groups_per_pass: int = 0  # groups optimised in one forward pass; 0 = as many as fit below
    # the activation memory one pass may hold when groups_per_pass is 0: fits a 16 GB GPU (and
    # the CPU's RAM) with room for the model, the optimiser state and the allocator
    pass_memory_budget: int = 6 * 2**30
    lr: float = 0.1  # Adam, constant: a snapshot at K then equals a separate K-step run
    statistics: Statistics = "batch"  # batch: over (N,H,W) per group; image: over (H,W) (ZeroQ)
    spread: Spread = "var"  # match the variance (paper) or sqrt(var + eps) (ZeroQ)
    norm: Norm = "l2"  # plain L2 norm of each difference (paper) or its square (ZeroQ)
    ce_weight: float = 1.0  # cross-entropy to the assigned labels
    tv_weight: float = 0.0  # total-variation image prior (DeepInversion), 0 = off
    clamp_pixels: bool = False  # project onto valid pixels [0, 1] after every step (paper: no)
    check_every: int = 25  # steps between finiteness checks (each one syncs a GPU)


@dataclass(frozen=True)
class InversionConfig:
    """Model inversion (attacks/inversion.py) and its independent evaluation classifier."""

    steps: int = 200  # Adam steps per reconstruction batch (all classes at once)
    per_class: int = 2  # reconstructions per class and variant
    lr: float = 0.1
    tv_weight: float = 0.05
    l2_weight: float = 0.001
    bn_weight: float = 1.0  # the BN prior, where the attacked model has BN layers
    jitter: int = 2  # px of random shift per step (priors variant)
    eval_epochs: int = 20  # the evaluation classifier, trained on the test split


@dataclass(frozen=True)
class FeatureConfig:
    """Feature inversion and HCR bounds on a classifier's penultimate features with Gaussian
    noise of scale x RMS(clean features) (attacks/feature_inversion.py, attacks/hcr.py)."""

    noise_scales: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    attacker_data: str = "nonmembers"  # what the decoder trains on: nonmembers | synthetic
    decoder_steps: int = 300
    victims: int = 100  # members reconstructed from their features
    hcr_images: int = 4  # members whose per-DCT-coefficient bounds are computed
    hcr_draws: int = 3  # random starts; the best bound per coefficient is kept
    hcr_rounds: int = 3  # inverse-iteration rounds per draw
    hcr_lsqr_iters: int = 30
    hcr_perturbation: float = 0.1  # ||a(theta + eps) - a(theta)|| / sigma of the chosen eps


@dataclass(frozen=True)
class VAEConfig:
    """The label-conditional VAE of dp_vae, dp2_vae and the non-private `vae` ablation."""

    latent: int = 8
    kl_weight: float = 1.0  # weight of the KL term against the summed pixel log-likelihood
    # Adam. On the default digits run at epsilon 10 the utility of a 100-image release was 0.09 /
    # 0.22 / 0.30 at 1e-3 / 3e-3 / 5e-3 (seed 0), 0.15 / 0.12 at 3e-3 / 5e-3 (seed 1)
    lr: float = 3e-3
    batch_size: int = 64  # expected batch under Poisson sampling (sample rate = batch / records)
    epochs: int = 30  # expected passes over the private records


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD as dp_vae and dp2_vae run it; the noise multiplier is solved for each epsilon."""

    delta: float = 1e-5
    clip: float = 1.0  # per-record gradient norm bound
    # DP^2-VAE: the share of the epochs spent on stage 1 (whole VAE); the rest trains the
    # decoder with the encoder frozen
    pretrain_share: float = 0.5
    # TEST-ONLY fault injection: the noise actually added is this times what the accountant is
    # charged for. 1.0 is DP-SGD; anything else makes a release whose epsilon claim is false, to
    # check that the canary audit catches it. No flag sets it.
    actual_noise_factor: float = 1.0
    # TEST-ONLY fault injection: records' gradients enter DP-SGD's sum unclipped while the noise
    # stays calibrated to clip (a known class of DP-SGD bug). No flag sets it.
    fault_skip_clipping: bool = False


@dataclass(frozen=True)
class BNMatchDPConfig:
    """BN matching from a DP teacher (generators/bn_match_dp.py): the teacher's DP-SGD recipe
    (Adam, expected batch under Poisson sampling; clip and delta are the `dp` section's), the
    share of each epsilon spent on releasing its normalisation statistics, and the matching."""

    epochs: int = 60  # expected passes over the private records
    batch_size: int = 128
    lr: float = 5e-3
    steps: int = 1000  # BN-matching steps against the released statistics (the paper's K)
    # of each target epsilon, the part the statistics' release alone may cost (solved at the
    # dp section's delta); DP-SGD gets what the composition leaves
    statistics_share: float = 0.2
    # the teacher's first N normalisation layers (as the model registers them) whose statistics
    # are released and matched; 0: all. ResNet20's first stage is 7: deeper GroupNorm inputs
    # look alike for any input, and matching all 21 left the images noise (docs/generators.md)
    statistics_layers: int = 7
    # per-record L2 bound of a record's statistics (its per-channel means of x and x^2 at every
    # normalisation layer of the teacher). None: set from public inputs, CLIP_MARGIN x the
    # median norm of uniform-noise images' statistics through the DP teacher (post-processing)
    statistics_clip: float | None = None
    # TEST-ONLY fault injection: the noise actually added to the statistics is this times what
    # the accountant is charged for (DPConfig.actual_noise_factor is DP-SGD's). No flag sets it.
    actual_statistics_noise_factor: float = 1.0


@dataclass(frozen=True)
class FedConfig:
    """DPD-fVAE: federated averaging over simulated clients, each keeping its encoder, the shared
    decoder trained with DP-SGD on every client. Defaults: the public code's settings
    (docs/references.md), except fewer clients for small private sets."""

    clients: int = 10
    partition: str = "iid"  # iid | dirichlet (label shares per client ~ Dirichlet(alpha))
    dirichlet_alpha: float = 0.5
    client_fraction: float = 1.0  # clients sampled per round
    rounds: int = 10
    local_epochs: int = 5
    batch_size: int = 20  # expected, Poisson-sampled on each client
    lr: float = 0.01  # clients' Adam
    server_lr: float = 1.0
    server_momentum: float = 0.9
    clip: float = 0.1
    # None: solved per epsilon for the whole plan (rounds x local epochs). A number: fixed, each
    # client stops when its epsilon is spent (the public code: 1.2, which at epsilon 1 and ~60
    # records per client allows no step at all)
    noise_multiplier: float | None = None
    latent: int = 8
    kl_weight: float = 0.01
    # TEST-ONLY fault injection: the published code's swap of the optimisers, DP-SGD on the
    # clients' encoders and a plain optimiser on the shared decoder. No flag sets it.
    fault_swap_optimisers: bool = False


# Named BN-matching loss variants (docs/references.md); "paper" is the default.
BN_LOSS_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"statistics": "batch", "spread": "var", "norm": "l2", "ce_weight": 1.0},
    # ZeroQ's matching term: per-image statistics, std, squared L2, no cross-entropy (its extra
    # input term pulling each image to mean 0 / std 1 is not included)
    "zeroq": {"statistics": "image", "spread": "std", "norm": "squared", "ce_weight": 0.0},
}


def coerce(kind: Any, value: Any, where: str) -> Any:
    """value as a field of type kind (int, float, bool, str, Literal, X | None, tuple[X, ...]):
    lists become tuples and integers floats; anything else is an AuditError naming the setting.

    Args:
        kind: the field's type annotation (int, float, bool, str, Literal[...], X | None or
            tuple[X, ...]).
        value: the value as given (TOML, JSON or a flag); a lone value for a tuple field becomes
            a one-element tuple.
        where: the setting's name, with its source, for messages.

    Returns:
        The value as kind: a tuple for tuple fields, a float for float fields, None where None
        is allowed and given.

    Raises:
        AuditError: the value does not fit kind (not one of the Literal's values, wrong type;
            a bool is no int or float).
        TypeError: kind is a type with no coercion rule (a schema bug, not a user error).
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]  # one value for a list setting: k = 500
        return tuple(coerce(args[0], v, where) for v in value)
    if origin is Literal:
        if value not in args:
            raise AuditError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise AuditError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AuditError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuditError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise AuditError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: no coercion for {kind!r}")
