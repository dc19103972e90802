"""Every flag of every `audit` subcommand, and its help text: the only place flags are defined."""

from __future__ import annotations

import argparse
from typing import NoReturn

from audit.config import BN_LOSS_VARIANTS
from audit.data import DATASETS
from audit.presets import PRESETS

EXIT_BAD_INPUT = 2


def by_preset(key: str, fallback: object = None) -> str:
    """A preset setting's value in each preset, for help texts: "quick 100, smoke 20, ..."."""

    def shown(value: object) -> str:
        return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)

    return ", ".join(f"{name} {shown(p.get(key, fallback))}" for name, p in PRESETS.items())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audit", description="Privacy and utility audit of synthetic image sets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="generate synthetic sets and audit them")
    run.add_argument(
        "--k",
        nargs="+",
        type=positive_int,
        metavar="K",
        help="BN-matching steps to release at (one trajectory serves all; default: the "
        f"preset's: {by_preset('ks')})",
    )
    run.add_argument(
        "--generator",
        nargs="+",
        metavar="NAME",
        help="generators to audit side by side: bn_match, dp_vae, dp2_vae, dpd_fvae, and vae "
        "(the DP-VAE trained without privacy: an ablation, NOT PRIVATE) "
        "(default: bn_match dp_vae)",
    )
    run.add_argument(
        "--epsilon",
        nargs="+",
        type=float,
        metavar="EPS",
        help="target epsilons of the DP generators, one row each (default 10)",
    )
    run.add_argument("--delta", type=float, help="delta of the DP generators (default 1e-5)")
    run.add_argument(
        "--dp-clip", type=float, help="DP-VAE / DP^2-VAE per-record clip norm (default 1.0)"
    )
    run.add_argument(
        "--dp-epochs", type=positive_int, help="VAE training epochs (default: the preset's)"
    )
    run.add_argument(
        "--dp-batch-size",
        type=positive_int,
        help="VAE expected batch size (Poisson sampling; default 64)",
    )
    run.add_argument("--clients", type=positive_int, help="DPD-fVAE clients (default 10)")
    run.add_argument(
        "--fed-noise",
        type=float,
        metavar="SIGMA",
        help="DPD-fVAE: a fixed noise multiplier, clients stopping when their epsilon is spent "
        "(the public code: 1.2); default: solved per epsilon for the whole plan",
    )
    run.add_argument(
        "--client-partition",
        choices=("iid", "dirichlet"),
        help="DPD-fVAE: how the members are split among clients (default iid)",
    )
    run.add_argument(
        "--canaries",
        type=int,
        default=0,
        metavar="M",
        help="audit every generator's epsilon in one extra run (Steinke et al. 2023): M "
        "mislabelled test records, each included by a fair coin (default 0: off)",
    )
    run.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="a local state dict of torchvision's inception_v3: adds fid_inception beside fd_eval "
        "(nothing is downloaded; default: none, no fid_inception)",
    )
    run.add_argument(
        "--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default digits)"
    )
    run.add_argument(
        "--data-root",
        help="directory of cifar10, mnist, fashion-mnist (torchvision format) or imagefolder "
        "(default: none; digits is embedded)",
    )
    run.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10")
    run.add_argument(
        "--image-size",
        type=positive_int,
        help="resize images to this many px (default: the dataset's own size; digits, 8 px, is "
        f"upscaled to the preset's: {by_preset('digits_image_size')})",
    )
    run.add_argument(
        "--model",
        default="resnet20_cifar10",
        help="pytorchcv CIFAR model name (default resnet20_cifar10)",
    )
    run.add_argument(
        "--weights",
        help="target weights file, a suite or pytorchcv state dict (default: none, the target "
        "is trained on the members)",
    )
    run.add_argument(
        "--n-synthetic",
        type=positive_int,
        help=f"synthetic images per K and per epsilon (default: the preset's: "
        f"{by_preset('n_synthetic')})",
    )
    for part in ("members", "nonmembers", "test"):
        run.add_argument(
            f"--max-{part}",
            type=positive_int,
            metavar="N",
            help=f"at most N {part.replace('nonmembers', 'non-members')} images "
            "(a CPU subset of a large dataset; default: the preset's cap)",
        )
    run.add_argument("--out", help="run directory (default runs/<time>-<config digest>)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run in --out and start afresh (without it, the run resumes)",
    )
    run.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the tensors live; auto: cuda when torch sees a GPU, else cpu (default auto)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch threads per task, in either executor (default: torch's, "
        f"{torch_threads()} here); results depend on it, so it is recorded",
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
    run.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes the split, the noise, the sampling and every model's initialisation "
        "(default 0)",
    )
    run.add_argument(
        "--preset",
        default="quick",
        choices=tuple(PRESETS),
        help="sizes and recipes: quick (sized for a 2-core CPU in minutes), smoke (seconds: checks "
        "an install, its numbers mean nothing), paper (the paper's recipe, for a GPU); explicit "
        "flags override it (default quick)",
    )
    run.add_argument(
        "--bn-loss",
        choices=tuple(BN_LOSS_VARIANTS),
        default="paper",
        help="BN-matching loss variant (default: the paper's)",
    )
    run.add_argument(
        "--bn-clamp-pixels",
        action="store_true",
        help="keep BN-matched images in the valid pixel range during optimisation "
        "(the paper does not; without it the release is clipped afterwards)",
    )
    run.add_argument(
        "--bn-groups-per-pass",
        type=positive_int,
        help="BN groups optimised in one forward pass (default: as many as fit a 6 GiB "
        "activation budget, measured on the model; set it higher on a large GPU)",
    )
    run.add_argument(
        "--utility-seeds",
        type=positive_int,
        help="retrain each utility model with this many seeds and report mean and std "
        f"(default: the preset's: {by_preset('utility_seeds', 1)})",
    )
    run.add_argument(
        "--real-utility-seeds",
        type=positive_int,
        help="seeds for the real-members baseline (default: the preset's, else --utility-seeds)",
    )
    run.add_argument(
        "--similarity-levels",
        nargs="+",
        type=float,
        metavar="T",
        help="report the share of released images whose nearest-member SSIM/HaarPSI exceeds T "
        "(default 0.5 0.7 0.9)",
    )
    run.add_argument(
        "--mia-refs",
        type=int,
        default=0,
        metavar="N",
        help="train N reference pipelines (target -> synthesis -> retraining, each on a random "
        "half of members + non-members) for LiRA and RMIA; costs about N times the main "
        "pipeline (default 0: single-model attacks only)",
    )
    run.add_argument(
        "--mia-no-augment",
        action="store_true",
        help="LiRA queries each record once instead of with shifted (and mirrored) copies",
    )
    run.add_argument(
        "--attacker-weights",
        metavar="FILE",
        help="the release attacker's feature extractor (--model architecture, a suite or "
        "pytorchcv state dict); default: one trained on the population (test) records",
    )
    run.add_argument(
        "--synthetic",
        metavar="PATH",
        help="audit this existing set instead of generating one: an .npz with images (uint8 "
        "N x H x W x C) and labels, or a folder PATH/<class>/* (default: none, generate)",
    )
    run.add_argument(
        "--split",
        metavar="FILE",
        help="members/non-members/test indices from a split.npz (e.g. of the run whose set "
        "--synthetic audits) instead of the seeded split (default: the seeded split)",
    )
    run.add_argument(
        "--redact-originals",
        "--redact-private",
        dest="redact_originals",
        action="store_true",
        help="show no private images in report.html (and keep none for re-rendering)",
    )
    report = sub.add_parser("report", help="re-render DIR/report.html from its saved results")
    report.add_argument("dir", help="a finished run directory")
    report.add_argument(
        "--redact-originals",
        action="store_true",
        help="replace every private image with a placeholder",
    )
    report.add_argument(
        "--thresholds",
        metavar="FILE.toml",
        help="judge the verdict by this file (default: the shipped default_thresholds.toml)",
    )
    report.add_argument("--out", help="write here (default DIR/report.html)")
    check = sub.add_parser(
        "check",
        help="gate: exit 1 if a release breaches a leakage threshold, 0 if all hold, 2 on bad "
        "input",
    )
    check.add_argument("dir", help="a finished run directory")
    check.add_argument(
        "--thresholds",
        metavar="FILE.toml",
        help="thresholds file (default: the shipped reports/default_thresholds.toml)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print the verdicts as one JSON document (reports/thresholds.py: verdict_document) "
        "instead of lines; the exit status is the same",
    )
    return parser
