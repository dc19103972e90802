"""BN matching from a DP teacher: the paper's method under differential privacy (issue 28).

The paper (papers/bn-synthetic-dataset-paper.txt) matches the running statistics of a teacher's
BatchNorm layers. Both halves touch private records: the weights (gradients) and the running
statistics (batch means and variances). Neither is private as trained, and BatchNorm cannot be
trained with per-record clipping at all (one record's gradient depends on its whole batch). So,
as the authors' follow-up proposes, this generator makes each half private on its own:

1. **The teacher** is the run's architecture with every BatchNorm replaced by GroupNorm
   (Opacus's `ModuleValidator.fix`, gcd(32, C) groups; GroupNorm normalises each record by
   itself), trained from its seeded initialisation with DP-SGD (generators/dp_sgd.py: Poisson
   sampling, per-record clipping to the dp section's clip, Gaussian noise) on the per-record
   cross-entropy. Its input normalisation is the fixed public mean 0.5 / std 0.25, never
   computed from the records.
2. **The statistics** the synthetic images match are released by the Gaussian mechanism
   (generators/dp_statistics.py): each member's per-channel means of x and of x^2 at the inputs
   of the teacher's first `statistics_layers` GroupNorm layers (registration order; all with
   0), clipped to L2 norm `clip`, summed, plus N(0, (sigma_s x clip)^2) on every coordinate.
   Dividing by the public n and turning moments into the (mean, variance) of each channel is
   post-processing. The clip is `statistics_clip` or, by default, set from public inputs only:
   CLIP_MARGIN x the median norm of the same summaries of uniform-noise images through the DP
   teacher (`public_clip`).
3. **The synthesis** is the paper's BN-statistics matching (generators/bn_match.py, the `bn`
   section's loss and optimiser) for `steps` steps, with those layers' batch means and
   variances matched to the released ones and the cross-entropy taken through the DP teacher.
   It reads nothing private but the two DP outputs, so it is post-processing.

Privacy proof. Mechanism 1 is the subsampled Gaussian mechanism run for T steps at rate q with
noise sigma_t (its RDP is what Opacus's accountant computes); mechanism 2, chosen after seeing
mechanism 1's output, is the Gaussian mechanism with L2 sensitivity `clip` (the one used, the
row's `dp_statistics_clip`) under adding or removing a record (a record's clipped summary
enters the sum once, and depends on no other record), so its RDP is alpha / (2 sigma_s^2) at
every order. RDP composes adaptively by adding at each order, and the conversion to
(epsilon, delta) happens once, on the sum: `DPRecord` holds the phases ((sigma_t, q, T),
(sigma_s, 1, 1)) and `eps_accountant` is their composition. The release (the images) is a
function of the two outputs and of values the accounting treats as public: the architecture,
the hyperparameters, the initialisation and synthesis seed, and the record count n that plans
the sampling and divides the sum (as for every DP row here: docs/generators.md, "What the
accounting treats as public"; n public is the add/remove convention with n fixed in advance).
The defaults of the hyperparameters are public only where they were not chosen on the records
released: the teacher's recipe, `statistics_layers` = 7 and CLIP_MARGIN were chosen by the
developers by looking at the default digits split (the teacher's test accuracy, the members'
statistics and norms), so on that split the guarantee does not cover the choice
(docs/generators.md says which figures; the run's DP assumptions list it).
Hence (eps_accountant, delta)-DP under add/remove of one member. The noise itself is drawn from
seeded generators so that a seed reproduces a run; a release that leaves the building must draw
it from a secret, secure source (docs/generators.md, "Randomness"). Budget: sigma_s is solved so
that the statistics alone cost `statistics_share` x epsilon at delta; sigma_t is then solved so
that the composition costs at most epsilon.

White-box audit. Each gradient canary of the run (generators/dp_sgd.py) is one record through
both mechanisms: its Dirac gradient joins DP-SGD, and it is one more row of the statistics'
release, of norm 1,000 x clip at a coordinate of its own that no member's summary touches,
clipped, summed and noised by the same code as the members (dp_statistics.py
`records_with_canaries`). Its statistics score is that released coordinate over the clip:
N(included, sigma_s^2) when the release is right, the Gaussian mechanism's worst case. The canary
audit tests it beside the gradient score on the same coins (Bonferroni). Its reach: each score
audits one half alone, so the audit refutes the claim only when one half by itself leaks more
than the whole claim (noise missing from either half, as the positive controls check); a fault
that keeps each half within the total (for example a release charged at half its true cost) is
beyond it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from audit.core.accounting import DP_RECORD_COLUMNS, DPRecord, Phase, rdp_epsilon, solve_noise
from audit.core.bn import bn_statistics_distance
from audit.core.columns import DP, MORE_LEAKAGE, NEUTRAL, Column
from audit.core.config import RunConfig
from audit.core.errors import AuditError
from audit.core.models import NormalizedClassifier, build_model
from audit.core.sections import BNMatchConfig, BNMatchDPConfig, DPConfig
from audit.core.seeding import numpy_rng
from audit.core.training import to_tensor
from generators import bn_match as bn_match_module
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet
from generators.bn_match import IMAGE_STEP_S, balanced_labels, bn_match
from generators.dp_sgd import Schedule, train_dp_sgd
from generators.dp_statistics import (
    ReleasedStatistics,
    group_norms,
    public_clip,
    release_statistics,
    statistics_phase,
)
from generators.dp_teacher import check_model, cross_entropy, dp_teacher
from generators.dp_vae import gradient_canaries, planned_records

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Budget:
    """One target epsilon split between the two mechanisms."""

    statistics_noise: float  # sigma_s, over the statistics clip
    training_noise: float  # sigma_t, over the dp section's clip
    schedule: Schedule  # the teacher's public sampling plan

    def phases(self, steps: int) -> tuple[Phase, ...]:
        """The phases the accountant composes, for the DP-SGD steps actually taken.

        Args:
            steps: the DP-SGD steps taken, >= 0.

        Returns:
            ((sigma_t, q, steps), (sigma_s, 1, 1)).
        """
        return (
            (self.training_noise, self.schedule.sample_rate, steps),
            statistics_phase(self.statistics_noise),
        )


def split_budget(epsilon: float, *, delta: float, share: float, schedule: Schedule) -> Budget:
    """sigma_s so that the statistics alone cost share x epsilon, then sigma_t so that DP-SGD
    composed with them costs at most epsilon (both at delta, on the RDP accountant).

    Args:
        epsilon: the target epsilon, > 0.
        delta: the target delta, in (0, 1).
        share: the statistics' part of epsilon, in (0, 1).
        schedule: the teacher's sampling plan (sample rate, steps), steps >= 1.

    Returns:
        The two noise multipliers and the schedule.

    Raises:
        AuditError: the statistics' release leaves nothing for DP-SGD (accounting.solve_noise).
    """
    statistics_noise = solve_noise(epsilon=share * epsilon, delta=delta, sample_rate=1.0, steps=1)
    training_noise = solve_noise(
        epsilon=epsilon,
        delta=delta,
        sample_rate=schedule.sample_rate,
        steps=schedule.steps,
        spent=(statistics_phase(statistics_noise),),
    )
    return Budget(statistics_noise, training_noise, schedule)


class BNMatchDP:
    name = "bn_match_dp"

    def __init__(
        self, settings: BNMatchDPConfig, bn: BNMatchConfig, dp: DPConfig, model: str
    ) -> None:
        self.settings, self.bn, self.dp, self.model = settings, bn, dp, model

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """Per target epsilon: a DP-SGD teacher, its DP statistics, and BN matching against them.

        Args:
            request: the generation request (its private records, epsilons, n_images, image
                shape, seed, device, gradient canaries; on_set, where set, is called with each
                release).

        Returns:
            {epsilon: release} per target epsilon, each with the DP record's columns and the
            matching's, its score_records the DP teacher's cross-entropy, and its
            gradient_scores and statistics_scores the canaries' (or None).

        Raises:
            AuditError: no private records, a model without BatchNorm layers, a budget the
                statistics alone spend, or BN matching diverging.
        """
        if request.private_images is None or request.private_labels is None:
            raise AuditError("bn_match_dp needs the private records (members)")
        x = to_tensor(request.private_images, request.device)
        y = torch.from_numpy(request.private_labels).long().to(request.device)
        records = planned_records(request)
        schedule = Schedule.of(records, self.settings.batch_size, self.settings.epochs)
        labels = balanced_labels(request.n_images, request.num_classes)
        sets: dict[SetKey, SyntheticSet] = {}
        for epsilon in request.epsilons:
            budget = split_budget(
                epsilon,
                delta=self.dp.delta,
                share=self.settings.statistics_share,
                schedule=schedule,
            )
            stream = f"{self.name}-eps{epsilon:g}"
            teacher = dp_teacher(
                build_model(
                    self.model,
                    channels=request.channels,
                    num_classes=request.num_classes,
                    seed=request.seed,
                    stream=stream,
                    image_size=request.image_size,
                )
            ).to(request.device)
            canaries = gradient_canaries(request)
            ran = train_dp_sgd(
                teacher,
                cross_entropy,
                x,
                y,
                schedule=schedule,
                noise_multiplier=budget.training_noise * self.dp.actual_noise_factor,
                clip=self.dp.clip,
                lr=self.settings.lr,
                seed=request.seed,
                stream=stream,
                canaries=canaries,
                canary_host=teacher.net,
                skip_clipping=self.dp.fault_skip_clipping,
            )
            image_shape = (request.channels, request.image_size, request.image_size)
            layers = group_norms(teacher, self.settings.statistics_layers)
            clip = self.settings.statistics_clip or public_clip(
                teacher, layers, image_shape, request.seed
            )
            statistics = release_statistics(
                teacher,
                layers,
                x,
                records=records,
                clip=clip,
                noise_multiplier=(
                    budget.statistics_noise * self.settings.actual_statistics_noise_factor
                ),
                rng=numpy_rng(request.seed, stream, "statistics"),
                canary_coins=request.gradient_canary_coins,
            )
            record = DPRecord(epsilon, self.dp.delta, budget.phases(ran.steps))
            sets[epsilon] = self._release(request, teacher, statistics, labels, record)
            if canaries is not None:
                sets[epsilon] = dataclasses.replace(
                    sets[epsilon], gradient_scores=canaries.scores.copy()
                )
            log.info(
                "[generate] %s: DP-SGD noise %.3g (%d steps at rate %.3g), statistics noise "
                "%.3g; accountant epsilon %.3g at delta %.0e",
                stream,
                budget.training_noise,
                ran.steps,
                ran.sample_rate,
                budget.statistics_noise,
                record.eps_accountant,
                record.delta,
            )
            if request.on_set is not None:
                request.on_set(epsilon, sets[epsilon])
        return sets

    def _release(
        self,
        request: GenerationRequest,
        teacher: NormalizedClassifier,
        statistics: ReleasedStatistics,
        labels: np.ndarray,
        record: DPRecord,
    ) -> SyntheticSet:
        """BN matching against the released statistics: the post-processing half."""
        steps = self.settings.steps
        result = bn_match(
            teacher,
            labels=labels,
            ks=(steps,),
            cfg=self.bn,
            image_shape=(request.channels, request.image_size, request.image_size),
            seed=request.seed,
            device=request.device,
            targets=statistics.targets,
        )
        images = result.snapshots[steps]
        distance = bn_statistics_distance(
            teacher,
            images,
            group_size=self.bn.group_size,
            device=request.device,
            targets=statistics.targets,
        )

        @torch.no_grad()
        def score_records(candidates: np.ndarray, candidate_labels: np.ndarray) -> np.ndarray:
            xb = to_tensor(candidates, request.device)
            yb = torch.from_numpy(candidate_labels).long().to(request.device)
            return cross_entropy(teacher.eval(), xb, yb, torch.Generator()).double().cpu().numpy()

        (training_noise, rate, steps_taken), (statistics_noise, _rate, _once) = record.phases
        info = {
            **record.columns(),
            # the generic columns describe the DP-SGD phase; dp_phases holds both
            "dp_noise_multiplier": training_noise,
            "dp_sample_rate": rate,
            "dp_steps": steps_taken,
            "dp_statistics_noise": statistics_noise,
            "dp_statistics_clip": statistics.clip,
            "dp_statistics_epsilon": rdp_epsilon([record.phases[1]], delta=record.delta),
            "bn_loss": result.loss_at[steps],
            "bn_stat_distance": distance,
        }
        return SyntheticSet(
            images=images,
            labels=labels,
            info=info,
            score_records=score_records,
            statistics_scores=statistics.canary_scores,
        )


def estimated_seconds(config: RunConfig, members: int) -> float:
    """Per target epsilon: the teacher's DP-SGD epochs and the matching's steps.

    Args:
        config: the run's config (its bn_dp section, n_synthetic and epsilons).
        members: the private records the teacher trains on, >= 0.

    Returns:
        Estimated seconds on the reference 2-core CPU at 16x16 px, >= 0.
    """
    training = TEACHER_RECORD_EPOCH_S * members * config.bn_dp.epochs
    matching = IMAGE_STEP_S * config.bn_dp.steps * config.n_synthetic
    return (training + matching) * len(config.epsilon)


# from the default digits run on the reference 2-core CPU: 70 s for 60 DP-SGD epochs of the
# GroupNorm ResNet20 over 629 members at 16x16 px
TEACHER_RECORD_EPOCH_S = 1.9e-3


COLUMNS: tuple[Column, ...] = (
    Column(
        "dp_statistics_noise",
        "bn_match_dp: noise multiplier of the normalisation statistics' Gaussian release",
        "> 0",
        NEUTRAL,
        DP,
    ),
    Column(
        "dp_statistics_clip",
        "bn_match_dp: per-record L2 bound of the released statistics (by default set from "
        "public noise images through the DP teacher)",
        "> 0",
        NEUTRAL,
        DP,
    ),
    Column(
        "dp_statistics_epsilon",
        "bn_match_dp: the epsilon the statistics' release alone costs at dp_delta (part of "
        "eps_accountant, which composes it with DP-SGD)",
        ">= 0",
        MORE_LEAKAGE,
        DP,
    ),
)


PLUGIN = GeneratorPlugin(
    "bn_match_dp",
    axis="epsilon",
    build=lambda config: BNMatchDP(config.bn_dp, config.bn, config.dp, config.model),
    settings=("bn_dp", "bn", "dp", "model"),
    cost=estimated_seconds,
    check=check_model,
    columns=DP_RECORD_COLUMNS + COLUMNS + bn_match_module.COLUMNS,
    summary="BN matching from a DP-SGD teacher and DP-released statistics, one set per epsilon",
)
