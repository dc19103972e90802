"""The `audit` command line: the only place flags are parsed."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import sys
import warnings
import zipfile
from typing import NoReturn

from audit.config import BN_LOSS_VARIANTS, PRESETS, build_config
from audit.data import DATASETS
from audit.errors import AuditError

EXIT_BAD_INPUT = 2
EXIT_BREACH = 1  # audit check: a release crossed a threshold


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
        help="BN-matching steps to release at (one trajectory serves all)",
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
    run.add_argument("--dp-clip", type=float, help="DP-VAE / DP^2-VAE per-record clip norm (1.0)")
    run.add_argument(
        "--dp-epochs", type=positive_int, help="VAE training epochs (default: the preset's)"
    )
    run.add_argument(
        "--dp-batch-size", type=positive_int, help="VAE expected batch size (Poisson; 64)"
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
        "(nothing is downloaded)",
    )
    run.add_argument(
        "--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default digits)"
    )
    run.add_argument("--data-root", help="directory of cifar10 (torchvision format) or imagefolder")
    run.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10")
    run.add_argument("--image-size", type=positive_int, help="resize images to this many px")
    run.add_argument("--model", default="resnet20_cifar10", help="pytorchcv CIFAR model name")
    run.add_argument("--weights", help="target weights file (suite or pytorchcv state dict)")
    run.add_argument("--n-synthetic", type=positive_int, help="synthetic images per K")
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
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
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
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--preset", default="quick", choices=tuple(PRESETS))
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
        help="retrain each utility model with this many seeds and report mean and std",
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
        "N x H x W x C) and labels, or a folder PATH/<class>/*",
    )
    run.add_argument(
        "--split",
        metavar="FILE",
        help="members/non-members/test indices from a split.npz (e.g. of the run whose set "
        "--synthetic audits) instead of the seeded split",
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
    report.add_argument("--thresholds", metavar="FILE.toml", help="judge the verdict by this file")
    report.add_argument("--out", help="write here instead of DIR/report.html")
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
    return parser


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from audit.pipeline import dry_run, execute, resolve_device

    if args.synthetic and args.k:
        raise AuditError("--k sets BN-matching steps; an external set (--synthetic) has none")
    bn = {**BN_LOSS_VARIANTS[args.bn_loss], "clamp_pixels": args.bn_clamp_pixels}
    if args.bn_groups_per_pass:
        bn["groups_per_pass"] = args.bn_groups_per_pass
    vae = {"epochs": args.dp_epochs, "batch_size": args.dp_batch_size}
    dp = {"delta": args.delta, "clip": args.dp_clip}
    fed = {
        "clients": args.clients,
        "partition": args.client_partition,
        "noise_multiplier": args.fed_noise,
    }
    generators = tuple(args.generator) if args.generator else None
    if args.synthetic and args.generator:
        raise AuditError(
            "--synthetic audits an existing set; it cannot be combined with --generator"
        )
    config = build_config(
        preset=args.preset,
        bn_overrides=bn,
        vae_overrides={k: v for k, v in vae.items() if v is not None},
        dp_overrides={k: v for k, v in dp.items() if v is not None},
        fed_overrides={k: v for k, v in fed.items() if v is not None},
        epsilons=tuple(args.epsilon) if args.epsilon else None,
        canaries=args.canaries,
        inception_weights=args.inception_weights,
        utility_seeds=args.utility_seeds,
        real_utility_seeds=args.real_utility_seeds,
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        image_size=args.image_size,
        model=args.model,
        weights=args.weights,
        ks=tuple(args.k) if args.k else None,
        n_synthetic=args.n_synthetic,
        max_members=args.max_members,
        max_nonmembers=args.max_nonmembers,
        max_test=args.max_test,
        out="",
        device=resolve_device(args.device),
        seed=args.seed,
        redact_private=args.redact_originals,
        mia_refs=args.mia_refs,
        mia_augment=False if args.mia_no_augment else None,
        attacker_weights=args.attacker_weights,
        synthetic=args.synthetic,
        generators=("external",) if args.synthetic else generators,
        split_file=args.split,
        similarity_thresholds=tuple(args.similarity_levels) if args.similarity_levels else None,
        threads=args.threads,
    )
    out = args.out or f"runs/{dt.datetime.now():%Y%m%d-%H%M%S}-{config.digest()[:8]}"
    config = dataclasses.replace(config, out=out)  # the digest ignores where results go
    if args.dry_run:
        print(dry_run(dataclasses.replace(config, out=args.out or "")))
        return 0
    if args.executor != "ray" and (args.ray_address or args.ray_cpus):
        raise AuditError("--ray-address and --ray-cpus need --executor ray")
    if config.mia_refs:
        logging.getLogger("audit").info(
            "--mia-refs %d: %d reference pipelines, each roughly the main pipeline's cost "
            "(`audit run --dry-run` estimates every task)",
            config.mia_refs,
            config.mia_refs,
        )
    executor = None
    if args.executor == "ray":
        from audit.ray_executor import RayExecutor

        executor = RayExecutor(args.ray_address, args.ray_cpus)
    root = execute(config, overwrite=args.overwrite, argv=argv, executor=executor)
    from reports.thresholds import gate_run, summary_lines

    thresholds, verdicts = gate_run(root)
    for line in summary_lines(verdicts):
        print(line)
    print(f"(verdict: {thresholds.source}; `audit check {root}` gives it as an exit status)")
    print(f"report: {root / 'report.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from audit.store import write_text_atomic
    from reports.gallery import PrivateImages
    from reports.render import build_report
    from reports.thresholds import load_run_results, load_thresholds

    thresholds = load_thresholds(args.thresholds)
    store, results = load_run_results(args.dir)
    private = PrivateImages(None) if args.redact_originals else PrivateImages.from_exhibits(store)
    html = build_report(store, results, private=private, thresholds=thresholds)
    out = args.out or str(store.path("report.html"))
    write_text_atomic(out, html)
    print(f"report: {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from reports.thresholds import gate_run, summary_lines

    thresholds, verdicts = gate_run(args.dir, args.thresholds)
    breaches = [v for v in verdicts if not v.passed]
    for verdict in breaches:
        print(f"BREACH {verdict.line()}")
    releases = len({v.row for v in verdicts})
    if not verdicts:
        raise AuditError(f"{args.dir}: no released rows to check")
    for line in summary_lines(verdicts):
        print(line)
    checks = f"{len(thresholds.limits)} limit(s) and {len(thresholds.tests)} test(s)"
    if breaches:
        print(
            f"FAIL: {len(breaches)} breach(es) in {releases} release(s) under {checks} "
            f"({thresholds.source})"
        )
        return EXIT_BREACH
    print(f"PASS: {releases} release(s) within {checks} ({thresholds.source})")
    return 0


OWN_LOGGERS = ("audit", "attacks", "generators", "reports")


def quiet_third_parties() -> None:
    """Our progress at INFO; other libraries only at WARNING (matplotlib's font-cache message is
    INFO), and no deprecation notices about code we do not own (torch.jit.script inside the
    libraries we call)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr, force=True)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # torch.compile on a CPU machine with CUDA_HOME set: "No CUDA runtime is found" (harmless)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"(torch|torchvision|piq)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_third_parties()
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # usage errors (status 2) and --help (0), as a return value
            return int(exc.code or 0)
        if args.command == "run":
            return _run(args, argv)
        if args.command in ("report", "check"):
            try:
                return _report(args) if args.command == "report" else _check(args)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise AuditError(
                    f"{args.dir}: a saved result is missing or corrupt ({type(exc).__name__}: "
                    f"{exc})"
                ) from None
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
