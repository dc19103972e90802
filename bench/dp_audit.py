"""The canary audit's reach and its positive controls, at the quick preset's size on digits.

Each case trains one DP generator on the default digits split's members plus the included
mislabelled record canaries (M test-split records, each in by a fair coin), with the gradient
canaries planted in its DP-SGD trainings, and audits the release with the code the report uses
(attacks/tasks/canaries.py audit_release). Cases: every DP generator at each epsilon as it ships,
and the positive controls at epsilon 1, each a test-only fault that breaks the guarantee:

* no-noise: dp_vae with no noise added (dp.actual_noise_factor 0);
* clipping-skipped: dp_vae whose records' gradients enter the sum unclipped
  (dp.fault_skip_clipping);
* optimiser-swap: dpd_fvae with the published code's swap (fed.fault_swap_optimisers): the DP
  optimiser on the clients' encoders, a plain one on the shared decoder;
* teacher-no-noise: bn_match_dp whose teacher's DP-SGD adds no noise (dp.actual_noise_factor 0);
* statistics-no-noise: bn_match_dp whose statistics are released with no noise
  (bn_dp.actual_statistics_noise_factor 0).

Per case: eps_accountant, and eps_audit beside eps_audit_max (what a perfect attack would reach)
for the black-box (label-aware SSIM), white-box model, white-box gradient and (bn_match_dp)
white-box statistics scores, and the claim's standing. Minutes on a 2-core CPU:

    python bench/dp_audit.py
    python bench/dp_audit.py --epsilons 1 --canaries 100 --gradient-canaries 5000 --out dp.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from attacks.tasks.canary_scores import audit_release, draw_canaries, gradient_coins
from audit.core.config import build_config
from audit.core.data import load_dataset
from audit.core.splits import split_dataset
from audit.core.store import to_json, write_text_atomic
from generators.base import GenerationRequest
from generators.registry import REGISTRY, get_generator

# every generator with an epsilon axis, as it ships
SOUND = tuple(name for name, plugin in REGISTRY.items() if plugin.axis == "epsilon")
CONTROLS: dict[str, tuple[str, dict[str, Any]]] = {
    "no-noise": ("dp_vae", {"dp": {"actual_noise_factor": 0.0}}),
    "clipping-skipped": ("dp_vae", {"dp": {"fault_skip_clipping": True}}),
    "optimiser-swap": ("dpd_fvae", {"fed": {"fault_swap_optimisers": True}}),
    "teacher-no-noise": ("bn_match_dp", {"dp": {"actual_noise_factor": 0.0}}),
    "statistics-no-noise": ("bn_match_dp", {"bn_dp": {"actual_statistics_noise_factor": 0.0}}),
}
SCORES = ("blackbox_ssim_label", "whitebox", "whitebox_gradient", "whitebox_statistics")


def audit_case(
    generator: str, faults: dict[str, Any], epsilon: float, args: argparse.Namespace
) -> dict[str, Any]:
    config = build_config(
        preset="quick", gradient_canaries=args.gradient_canaries, seed=args.seed, **faults
    )
    data = load_dataset("digits", None, image_size=config.image_size)
    split = split_dataset(
        data,
        seed=config.seed,
        member_fraction=config.member_fraction,
        nonmember_fraction=config.nonmember_fraction,
        max_members=config.max_members,
        max_nonmembers=config.max_nonmembers,
        max_test=config.max_test,
    )
    # drawn as the canary stage draws them
    index, labels, included = draw_canaries(
        config.seed, split.test, data.labels, args.canaries, len(data.classes)
    )
    coins = gradient_coins(config)
    images = data.images[index]
    request = GenerationRequest(
        teacher=None,  # type: ignore[arg-type]  # these train on the records, not the target
        ks=(),
        n_images=config.n_synthetic,
        num_classes=len(data.classes),
        channels=data.channels,
        image_size=data.image_size,
        seed=config.seed,
        device="cpu",
        private_images=np.concatenate([data.images[split.members], images[included]]),
        private_labels=np.concatenate([data.labels[split.members], labels[included]]),
        epsilons=(epsilon,),
        gradient_canary_coins=coins,
        planned_records=len(split.members) + args.canaries,  # as the canary stage plans it
    )
    start = time.perf_counter()
    release = get_generator(generator, config).generate(request)[epsilon]
    figures = audit_release(release, images, labels, included, coins, config)
    return {
        "eps_accountant": release.info["eps_accountant"],
        "seconds": time.perf_counter() - start,
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--canaries", type=int, default=100)
    parser.add_argument("--gradient-canaries", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write every case's figures here as JSON")
    args = parser.parse_args()
    cases: list[tuple[str, str, dict[str, Any], float]] = [
        (g, g, {}, eps) for g in SOUND for eps in args.epsilons
    ]
    cases += [(name, g, faults, 1.0) for name, (g, faults) in CONTROLS.items()]
    found: dict[str, dict[str, Any]] = {}
    head = "| case | eps_accountant | " + " | ".join(f"{s} (max)" for s in SCORES)
    print(head + " | eps_audit (max) | the claim |")
    print("|---" * (len(SCORES) + 4) + "|")
    for name, generator, faults, epsilon in cases:
        key = f"{name}-eps{epsilon:g}"
        figures = found[key] = audit_case(generator, faults, epsilon, args)
        by_score = [
            f"{figures.get(f'eps_audit_{s}', float('nan')):.2f} "
            f"({figures.get(f'eps_audit_max_{s}', float('nan')):.2f})"
            for s in SCORES
        ]
        print(
            f"| {key} | {figures['eps_accountant']:.3g} | " + " | ".join(by_score) + f" | "
            f"{figures['eps_audit']:.2f} ({figures['eps_audit_max']:.2f}) | "
            f"{figures['dp_claim_status']} (p {figures['dp_claim_p']:.2g}) |",
            flush=True,
        )
    if args.out:
        write_text_atomic(args.out, to_json({"args": vars(args), "cases": found}))


if __name__ == "__main__":
    main()
