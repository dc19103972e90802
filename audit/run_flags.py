"""`audit run`'s flags: one per setting, named after it (audit/arguments.py add_setting)."""

from __future__ import annotations

import argparse

from audit.core.config import RunConfig
from audit.core.data import DATASETS
from audit.core.presets import PRESETS
from audit.core.sections import BN_LOSS_VARIANTS
from audit.flags import add_setting, by_preset, by_section, positive_int
from generators.registry import REGISTRY


def add_run_flags(run: argparse.ArgumentParser) -> None:
    """Every flag of `audit run`, on its subparser."""
    run.add_argument(
        "--config",
        metavar="FILE.toml",
        help="settings in config.json's names (top-level keys, sections [bn] [bn_dp] [vae] [dp] "
        "[fed] [target] [utility] [inversion] [features]); flags override it (default: none)",
    )
    add_setting(
        run,
        "k",
        nargs="+",
        type=positive_int,
        metavar="K",
        help="BN-matching steps to release at (one trajectory serves all; default: the "
        f"preset's: {by_preset('k')})",
    )
    add_setting(
        run,
        "generator",
        nargs="+",
        metavar="NAME",
        help="generators to audit side by side: "
        + ", ".join(f"{p.name} ({p.summary})" if p.summary else p.name for p in REGISTRY.values())
        + f" (default: {' '.join(RunConfig().generator)})",
    )
    add_setting(
        run,
        "epsilon",
        nargs="+",
        type=float,
        metavar="EPS",
        help="target epsilons of the DP generators, one row each (default 10)",
    )
    add_setting(
        run, "dp.delta", "--delta", type=float, help="delta of the DP generators (default 1e-5)"
    )
    add_setting(
        run, "dp.clip", type=float, help="DP-VAE / DP^2-VAE per-record clip norm (default 1.0)"
    )
    add_setting(
        run,
        "vae.epochs",
        "--dp-epochs",
        type=positive_int,
        help=f"VAE training epochs (default: the preset's: {by_section('vae', 'epochs')})",
    )
    add_setting(
        run,
        "vae.batch_size",
        "--dp-batch-size",
        type=positive_int,
        help="VAE expected batch size (Poisson sampling; default 64)",
    )
    add_setting(
        run, "fed.clients", "--clients", type=positive_int, help="DPD-fVAE clients (default 10)"
    )
    add_setting(
        run,
        "fed.noise_multiplier",
        "--fed-noise",
        type=float,
        metavar="SIGMA",
        help="DPD-fVAE: a fixed noise multiplier, clients stopping when their epsilon is spent "
        "(the public code: 1.2); default: solved per epsilon for the whole plan",
    )
    add_setting(
        run,
        "fed.partition",
        "--client-partition",
        choices=("iid", "dirichlet"),
        help="DPD-fVAE: how the members are split among clients (default iid)",
    )
    add_setting(
        run,
        "canaries",
        type=int,
        metavar="M",
        help="audit every generator's epsilon in one extra run (Steinke et al. 2023): M "
        "mislabelled test records, each included by a fair coin (default 0: off)",
    )
    add_setting(
        run,
        "gradient_canaries",
        type=int,
        metavar="M",
        help="with --canaries: M white-box Dirac gradient canaries planted beside them in every "
        "DP-SGD training of the audit run, each by a fair coin (default 5000; 0: none)",
    )
    add_setting(
        run,
        "inception_weights",
        metavar="FILE",
        help="a local state dict of torchvision's inception_v3: adds fid_inception beside fd_eval "
        "(nothing is downloaded; default: none, no fid_inception)",
    )
    add_setting(run, "dataset", help=f"one of {', '.join(DATASETS)} (default digits)")
    add_setting(
        run,
        "data_root",
        help="directory of cifar10, mnist, fashion-mnist (torchvision format) or imagefolder "
        "(default: none; digits is embedded)",
    )
    add_setting(
        run,
        "download",
        action=argparse.BooleanOptionalAction,
        help="let torchvision download the dataset into --data-root (default: no)",
    )
    add_setting(
        run,
        "image_size",
        type=positive_int,
        help="resize images to this many px (default: the dataset's own size; digits, 8 px, is "
        f"upscaled to the preset's: {by_preset('digits_image_size')})",
    )
    add_setting(
        run,
        "model",
        help="the target's architecture: a pytorchcv CIFAR model name, or module:function, "
        "your own code building a classifier with BatchNorm layers as function(channels=, "
        "num_classes=, image_size=) (default resnet20_cifar10)",
    )
    add_setting(
        run,
        "weights",
        help="target weights file, a suite or pytorchcv state dict (default: none, the target "
        "is trained on the members)",
    )
    add_setting(
        run,
        "n_synthetic",
        type=positive_int,
        help=f"synthetic images per K and per epsilon (default: the preset's: "
        f"{by_preset('n_synthetic')})",
    )
    for part, noun in (("members", "member"), ("nonmembers", "non-member"), ("test", "test")):
        add_setting(
            run,
            f"max_{part}",
            type=positive_int,
            metavar="N",
            help=f"at most N {noun} images "
            f"(a CPU subset of a large dataset; default: the preset's: {by_preset('max_' + part)})",
        )
    add_setting(run, "out", help="run directory (default runs/<time>-<config digest>)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run in --out and start afresh (without it, the run resumes)",
    )
    add_setting(
        run,
        "device",
        choices=("auto", "cpu", "cuda"),
        help="where the tensors live; auto: cuda when torch sees a GPU, else cpu (default auto)",
    )
    add_setting(
        run,
        "threads",
        type=positive_int,
        metavar="N",
        help="torch threads per task, in either executor (default: torch's, the physical cores); "
        "results depend on it, so it is recorded",
    )
    run.add_argument(
        "--executor",
        choices=("serial", "ray"),
        default="serial",
        help="run the tasks one at a time here (default) or as Ray tasks (the ray extra); "
        "both give the same bytes",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="a running Ray cluster (its nodes share the run directory's filesystem); default: "
        "start one on this machine, bound to loopback",
    )
    run.add_argument(
        "--ray-cpus",
        type=positive_int,
        metavar="N",
        help="CPUs of the local Ray cluster (default: all); each task takes --threads of them",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the task graph, each task's estimated cost and what --out already holds; "
        "run nothing",
    )
    add_setting(
        run,
        "seed",
        type=int,
        help="fixes the split, the noise, the sampling and every model's initialisation "
        "(default 0)",
    )
    add_setting(
        run,
        "preset",
        choices=tuple(PRESETS),
        help="sizes and recipes: quick (sized for a 2-core CPU in minutes), smoke (seconds: checks "
        "an install, its numbers mean nothing), paper (the paper's recipe, for a GPU); explicit "
        "flags override it (default quick)",
    )
    run.add_argument(
        "--bn-loss",
        choices=tuple(BN_LOSS_VARIANTS),
        help="BN-matching loss variant, a shorthand for bn.statistics, bn.spread, bn.norm and "
        "bn.ce_weight (default: the paper's)",
    )
    add_setting(
        run,
        "bn.clamp_pixels",
        action=argparse.BooleanOptionalAction,
        help="keep BN-matched images in the valid pixel range during optimisation "
        "(the paper does not; without it the release is clipped afterwards; default: no)",
    )
    add_setting(
        run,
        "bn.groups_per_pass",
        type=positive_int,
        help="BN groups optimised in one forward pass (default: as many as fit a 6 GiB "
        "activation budget, measured on the model; set it higher on a large GPU)",
    )
    add_setting(
        run,
        "utility_seeds",
        type=positive_int,
        help="retrain each utility model with this many seeds and report mean and std "
        f"(default: the preset's: {by_preset('utility_seeds', 1)})",
    )
    add_setting(
        run,
        "real_utility_seeds",
        type=positive_int,
        help="seeds for the real-members baseline (default: the quick preset's 1, otherwise "
        "--utility-seeds)",
    )
    add_setting(
        run,
        "similarity_levels",
        nargs="+",
        type=float,
        metavar="T",
        help="report the share of released images whose nearest-member SSIM/HaarPSI exceeds T "
        "(default 0.5 0.7 0.9)",
    )
    add_setting(
        run,
        "nn_shift",
        type=int,
        metavar="PX",
        help="compare released images with private ones shifted by up to PX pixels along each "
        "axis, the best match counting (a generator's crop augmentation yields shifted "
        "copies; 0: as they are; default 2)",
    )
    add_setting(
        run,
        "nn_mirror",
        action=argparse.BooleanOptionalAction,
        help="compare released images with mirrored private ones too (default: where the "
        "dataset's classes allow it: cifar10 and imagefolder yes, digits and mnist no)",
    )
    add_setting(
        run,
        "mia_refs",
        type=int,
        metavar="N",
        help="train N reference pipelines (target -> synthesis -> retraining, each on a random "
        "half of members + non-members) for LiRA and RMIA; costs about N times the main "
        "pipeline (default 0: single-model attacks only)",
    )
    add_setting(
        run,
        "mia_augment",
        action=argparse.BooleanOptionalAction,
        help="LiRA queries each record shifted (and mirrored) too; --no-mia-augment: once "
        "(default: yes)",
    )
    run.add_argument(  # the earlier spelling of --no-mia-augment
        "--mia-no-augment",
        dest="mia_augment",
        action="store_const",
        const=False,
        help=argparse.SUPPRESS,
    )
    add_setting(
        run,
        "attacker_weights",
        metavar="FILE",
        help="the release attacker's feature extractor (--model architecture, a suite or "
        "pytorchcv state dict); default: one trained on the population (test) records",
    )
    add_setting(
        run,
        "synthetic",
        metavar="PATH",
        help="audit this existing set instead of generating one: an .npz with images (uint8 "
        "N x H x W x C) and labels, or a folder PATH/<class>/* (default: none, generate)",
    )
    add_setting(
        run,
        "split",
        metavar="FILE",
        help="members/non-members/test indices from a split.npz (e.g. of the run whose set "
        "--synthetic audits) instead of the seeded split (default: the seeded split)",
    )
    add_setting(
        run,
        "redact_originals",
        "--redact-private",
        action=argparse.BooleanOptionalAction,
        help="show no private images in report.html (and keep none for re-rendering; default: no)",
    )
