"""Which GroupNorm layers bn_match_dp should release and match: the experiment behind
`bn_dp.statistics_layers` (docs/generators.md, "Why only the first stage").

Trains one DP teacher as bn_match_dp does (default digits split, quick preset, its seed streams,
epsilon 10 with the statistics' share of the budget), then, for the first N GroupNorm layers:
the members' median summary norm and the share clipped at the public clip, and BN matching of
n_synthetic (100) images in one group for 300 steps against the members' statistics, exact (no
clipping, no noise) and as released at the epsilon's noise. Per case: the matching loss after
steps 1 / 100 / 300, the share of images the teacher classifies as their assigned label (which
the cross-entropy term optimises, so it says little), and the test accuracy of a ResNet20
retrained on the images with the quick utility recipe (one seed). About 4 minutes on a 2-core
CPU:

    python bench/bn_dp_layers.py
    python bench/bn_dp_layers.py --epsilon 1 --layers 21 14 7 3
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from audit.core.config import build_config
from audit.core.data import load_dataset
from audit.core.models import build_model
from audit.core.splits import split_dataset
from audit.core.training import accuracy, retrain, to_tensor
from generators.bn_match import balanced_labels, bn_match
from generators.bn_match_dp import split_budget
from generators.dp_sgd import Schedule, train_dp_sgd
from generators.dp_statistics import (
    group_norms,
    member_summaries,
    public_clip,
    release_statistics,
)
from generators.dp_teacher import cross_entropy, dp_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--layers", type=int, nargs="+", default=[21, 7])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    config = build_config(preset="quick")
    data = load_dataset("digits", None, image_size=16)
    split = split_dataset(
        data,
        seed=config.seed,
        member_fraction=config.member_fraction,
        nonmember_fraction=config.nonmember_fraction,
        max_members=config.max_members,
        max_nonmembers=config.max_nonmembers,
        max_test=config.max_test,
    )
    x = to_tensor(data.images[split.members])
    y = torch.from_numpy(data.labels[split.members]).long()
    settings = config.bn_dp
    schedule = Schedule.of(len(x), settings.batch_size, settings.epochs)
    budget = split_budget(
        args.epsilon, delta=config.dp.delta, share=settings.statistics_share, schedule=schedule
    )
    stream = f"bn_match_dp-eps{args.epsilon:g}"  # the generator's streams
    model = build_model(
        config.model, channels=1, num_classes=10, seed=config.seed, stream=stream, image_size=16
    )
    teacher = dp_teacher(model)
    train_dp_sgd(
        teacher,
        cross_entropy,
        x,
        y,
        schedule=schedule,
        noise_multiplier=budget.training_noise,
        clip=config.dp.clip,
        lr=settings.lr,
        seed=config.seed,
        stream=stream,
    )
    test_x = to_tensor(data.images[split.test])
    with torch.no_grad():
        predicted_test = teacher(test_x).argmax(1).numpy()
    teacher_accuracy = float((predicted_test == data.labels[split.test]).mean())
    print(f"DP teacher at epsilon {args.epsilon:g}: test accuracy {teacher_accuracy:.3f}")
    print(
        "| layers | members' median norm | public clip | members clipped | statistics | "
        "loss after 1 / 100 / 300 | classified as their label | retrained utility |"
    )
    print("|---|---|---|---|---|---|---|---|")
    labels = balanced_labels(config.n_synthetic, 10)
    cfg = dataclasses.replace(config.bn, group_size=config.n_synthetic)
    ks = (1, args.steps // 3, args.steps)
    test_images, test_labels = data.images[split.test], data.labels[split.test]
    for count in args.layers:
        layers = group_norms(teacher, count)
        clip = public_clip(teacher, layers, (1, 16, 16), config.seed)
        norms = np.linalg.norm(member_summaries(teacher, layers, x), axis=1)
        for name, noise, bound in (("exact", 0.0, 1e12), ("DP", budget.statistics_noise, clip)):
            released = release_statistics(
                teacher,
                layers,
                x,
                records=len(x),
                clip=bound,
                noise_multiplier=noise,
                rng=np.random.default_rng(config.seed),
                canary_coins=None,
            )
            result = bn_match(
                teacher,
                labels=labels,
                ks=ks,
                cfg=cfg,
                image_shape=(1, 16, 16),
                seed=config.seed,
                device="cpu",
                progress=False,
                targets=released.targets,
            )
            images = result.snapshots[args.steps]
            with torch.no_grad():
                predicted = teacher(to_tensor(images)).argmax(1).numpy()
            retrained = retrain(
                images,
                labels,
                model_name=config.model,
                num_classes=10,
                cfg=config.utility,
                seed=config.seed,
                stream="utility-bench",
                device="cpu",
            )
            utility = accuracy(retrained, test_images, test_labels, device="cpu")
            losses = " / ".join(f"{result.loss_at[k]:.1f}" for k in ks)
            print(
                f"| {len(layers)} | {np.median(norms):.1f} | {clip:.1f} | "
                f"{(norms > clip).mean():.2f} | {name} | {losses} | "
                f"{(predicted == labels).mean():.2f} | {utility:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
