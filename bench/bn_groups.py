"""Side-by-side: G BN groups in one forward pass vs the same G groups one pass each.

The sequential side is what peers run: a loop over 250-image batches, each optimised on its own.
Same images, same steps, same device, one run; prints image-steps/s for both and the ratio as the
last line (`speedup: groups-in-one-pass 3.1x`). On a 2-core CPU expect 1x or less (the CPU is
already busy with one group); the gain is on a GPU, where one 250-image group leaves it mostly
idle. Issue 7's target on a GPU is at least 5x.

    python bench/bn_groups.py                                    # CPU: 4 x 250 images, 5 steps
    python bench/bn_groups.py --groups 16 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from audit.core.models import build_model
from audit.core.sections import BNMatchConfig
from generators.bn_match import balanced_labels, bn_match


def timed(teacher, cfg: BNMatchConfig, n: int, steps: int, size: int, device: str) -> float:
    start = time.perf_counter()
    bn_match(
        teacher,
        labels=balanced_labels(n, 10),
        ks=(steps,),
        cfg=cfg,
        image_shape=(3, size, size),
        seed=0,
        device=device,
        progress=False,
    )
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(groups: int, group_size: int, steps: int, size: int, device: str) -> dict[str, float]:
    """Image-steps/s of the G groups in one pass and one pass each, and their ratio."""
    teacher = build_model("resnet20_cifar10", channels=3, num_classes=10, seed=0)
    teacher.train()
    with torch.no_grad():  # plausible running statistics without a training run
        for _ in range(5):
            teacher(torch.rand(64, 3, size, size))
    teacher.eval().to(device)
    n = groups * group_size
    work = n * steps
    one_pass = BNMatchConfig(  # every group in one pass, whatever the memory budget would pick
        group_size=group_size, groups_per_pass=groups, check_every=steps
    )
    sequential = BNMatchConfig(group_size=group_size, groups_per_pass=1, check_every=steps)
    timed(teacher, one_pass, n, 2, size, device)  # warm-up
    t_one = timed(teacher, one_pass, n, steps, size, device)
    t_seq = timed(teacher, sequential, n, steps, size, device)
    return {
        "one_pass_image_steps_per_s": work / t_one,
        "sequential_image_steps_per_s": work / t_seq,
        "one_pass_s": t_one,
        "sequential_s": t_seq,
        "speedup": t_seq / t_one,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=250)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    m = measure(args.groups, args.group_size, args.steps, args.size, args.device)
    print(
        f"device {args.device}: {args.groups} groups x {args.group_size} images, {args.steps} steps"
    )
    print(
        f"one pass:   {m['one_pass_image_steps_per_s']:10.1f} image-steps/s "
        f"({m['one_pass_s']:.2f} s)"
    )
    print(
        f"sequential: {m['sequential_image_steps_per_s']:10.1f} image-steps/s "
        f"({m['sequential_s']:.2f} s)"
    )
    print(f"speedup: groups-in-one-pass {m['speedup']:.2f}x")


if __name__ == "__main__":
    main()
