"""The run configuration's checks: every impossible or unsupported setting is an AuditError
that names it, before anything runs (build_config calls `validate`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from audit.core.errors import AuditError

if TYPE_CHECKING:
    from audit.core.config import RunConfig


def validate(config: RunConfig) -> None:
    """Reject impossible values with a message naming the flag.

    Args:
        config: the complete run configuration.

    Raises:
        AuditError: the first impossible value found, e.g. no or non-positive k, epsilon not
            positive and finite, delta outside (0, 1), fractions not leaving a test split, an
            image size under 16, a BN group size under 2, or non-positive training settings.
    """
    if not config.k:
        raise AuditError("--k needs at least one positive integer")
    for k in config.k:
        if k <= 0:
            raise AuditError(f"--k must be positive integers, got {k}")
    if config.threads is not None and config.threads < 1:
        raise AuditError(f"--threads must be a positive integer, got {config.threads}")
    if config.mia_refs == 1 or config.mia_refs < 0:
        raise AuditError(
            f"--mia-refs needs 0 or at least 2 reference models (each record must be IN for "
            f"some and OUT for others), got {config.mia_refs}"
        )
    for epsilon in config.epsilon:
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise AuditError(f"--epsilon must be positive and finite, got {epsilon}")
    if not config.epsilon:
        raise AuditError("--epsilon needs at least one positive value")
    if not (0 < config.dp.delta < 1):
        raise AuditError(f"--delta must lie in (0, 1), got {config.dp.delta}")
    if not (config.dp.clip > 0 and config.fed.clip > 0):
        raise AuditError("the DP clip norms must be positive")
    if not 0 < config.dp.pretrain_share < 1:
        raise AuditError(
            f"DP^2-VAE's pretrain share must lie in (0, 1), got {config.dp.pretrain_share}"
        )
    bn_dp = config.bn_dp
    if min(bn_dp.epochs, bn_dp.batch_size, bn_dp.steps) <= 0 or not bn_dp.lr > 0:
        raise AuditError(
            "bn_match_dp's epochs, batch size, steps and learning rate must be positive"
        )
    clip = bn_dp.statistics_clip
    if bn_dp.statistics_layers < 0:
        raise AuditError(f"bn_dp.statistics_layers must be >= 0, got {bn_dp.statistics_layers}")
    if not bn_dp.actual_statistics_noise_factor >= 0:
        raise AuditError("bn_dp.actual_statistics_noise_factor must be >= 0")
    if not 0 < bn_dp.statistics_share < 1 or (clip is not None and not clip > 0):
        raise AuditError(
            "bn_match_dp's statistics share must lie in (0, 1) and its statistics clip be "
            f"positive, got {bn_dp.statistics_share} and {clip}"
        )
    vae, fed = config.vae, config.fed
    if (
        min(vae.latent, vae.batch_size, vae.epochs, fed.latent, fed.batch_size, fed.local_epochs)
        <= 0
    ):
        raise AuditError("VAE latent size, batch size and epochs must be positive")
    if min(fed.clients, fed.rounds) <= 0 or not 0 < fed.client_fraction <= 1:
        raise AuditError("DPD-fVAE needs clients >= 1, rounds >= 1 and a client fraction in (0, 1]")
    if fed.partition not in ("iid", "dirichlet") or fed.dirichlet_alpha <= 0:
        raise AuditError(f"--client-partition must be iid or dirichlet, got {fed.partition!r}")
    if fed.noise_multiplier is not None and not (
        fed.noise_multiplier > 0 and math.isfinite(fed.noise_multiplier)
    ):
        raise AuditError(
            f"DPD-fVAE's noise multiplier must be positive, got {fed.noise_multiplier}"
        )
    if len(set(config.generator)) != len(config.generator) or not config.generator:
        raise AuditError(f"--generator lists each generator once: {' '.join(config.generator)}")
    if config.synthetic and config.generator != ("external",):
        raise AuditError(
            "--synthetic audits an existing set; it cannot be combined with generators"
        )
    if not 0 <= config.eps_delta < 1:
        raise AuditError(f"eps_delta must lie in [0, 1), got {config.eps_delta}")
    if config.mia_candidates <= 0 or config.max_reference <= 0:
        raise AuditError("attack candidates and the real row's size must be positive")
    if config.max_holdout < 2:
        raise AuditError(f"max_holdout must be at least 2, got {config.max_holdout}")
    if config.max_nonmembers is not None and config.max_nonmembers < 3:
        raise AuditError(
            f"--max-nonmembers must be at least 3 (2 held out, 1 for the real row's release), "
            f"got {config.max_nonmembers}"
        )
    if config.canaries < 0 or config.canaries == 1:
        raise AuditError(f"--canaries needs 0 (off) or at least 2 canaries, got {config.canaries}")
    if config.gradient_canaries < 0 or config.gradient_canaries == 1:
        raise AuditError(
            f"--gradient-canaries needs 0 (off) or at least 2, got {config.gradient_canaries}"
        )
    most = math.floor(1 / (2 * config.dp.delta) + 1e-9)  # 1 / 2e-5 is 49999.999...
    if config.canaries and max(config.canaries, config.gradient_canaries) > most:
        # the audit's bound grows with the right guesses only while 2 m delta <= 1
        raise AuditError(
            f"at --delta {config.dp.delta:g} the canary audit takes at most {most} canaries "
            f"(2 m delta <= 1), got {max(config.canaries, config.gradient_canaries)}"
        )
    if config.nn_k <= 0:
        raise AuditError(f"nn_k must be positive, got {config.nn_k}")
    if not 0 <= config.nn_shift <= 8:
        raise AuditError(f"--nn-shift must lie in [0, 8] px, got {config.nn_shift}")
    if config.utility_seeds <= 0:
        raise AuditError(f"--utility-seeds must be positive, got {config.utility_seeds}")
    if config.real_utility_seeds is not None and config.real_utility_seeds <= 0:
        raise AuditError(f"--real-utility-seeds must be positive, got {config.real_utility_seeds}")
    if config.n_synthetic <= 0:
        raise AuditError(f"--n-synthetic must be positive, got {config.n_synthetic}")
    if config.image_size is not None and config.image_size < 16:
        raise AuditError(
            f"--image-size must be at least 16 (piq's HaarPSI needs 16 px), got {config.image_size}"
        )
    if not 0 < config.member_fraction < 1 or not 0 < config.nonmember_fraction < 1:
        raise AuditError("member and non-member fractions must lie in (0, 1)")
    if config.member_fraction + config.nonmember_fraction >= 1:
        raise AuditError("member + non-member fractions must leave a test split (sum < 1)")
    for t in config.similarity_levels:
        if not 0 <= t <= 1:
            raise AuditError(f"--similarity-levels must lie in [0, 1], got {t}")
    bn = config.bn
    if bn.group_size <= 1:
        raise AuditError(f"BN group size must be at least 2, got {bn.group_size}")
    if bn.lr <= 0 or bn.check_every <= 0 or bn.groups_per_pass < 0 or bn.pass_memory_budget <= 0:
        raise AuditError("BN matching needs lr > 0, check_every > 0 and groups_per_pass >= 0")
    f = config.features
    if any(scale < 0 for scale in f.noise_scales) or not f.noise_scales:
        raise AuditError(f"feature noise scales must be >= 0, got {f.noise_scales}")
    if f.attacker_data not in ("nonmembers", "synthetic"):
        raise AuditError(
            f"feature attacker data must be nonmembers or synthetic: {f.attacker_data}"
        )
    if config.inversion.steps <= 0 or config.inversion.per_class <= 0:
        raise AuditError("model inversion needs positive steps and reconstructions per class")
    for name, train in (("target", config.target), ("utility", config.utility)):
        # a batch of one image is skipped by the loop (BatchNorm needs two): nothing would train
        if train.epochs <= 0 or train.batch_size < 2 or train.lr <= 0:
            raise AuditError(
                f"{name} training needs positive epochs, a batch size of at least 2 and a "
                f"positive lr, got {train.epochs}, {train.batch_size} and {train.lr:g}"
            )
