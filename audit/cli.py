"""The `audit` command line: parse the flags (audit/arguments.py), run the subcommand, map errors
to exit statuses."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import warnings
import zipfile

from audit.arguments import EXIT_BAD_INPUT, build_parser
from audit.config import BN_LOSS_VARIANTS, build_config
from audit.errors import AuditError

EXIT_BREACH = 1  # audit check: a release crossed a threshold


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
    from reports.thresholds import gate_run, summary_lines, verdict_document

    thresholds, verdicts = gate_run(args.dir, args.thresholds)
    breaches = [v for v in verdicts if not v.passed]
    if args.json:
        if not verdicts:
            raise AuditError(f"{args.dir}: no released rows to check")
        print(json.dumps(verdict_document(args.dir, thresholds, verdicts), indent=2))
        return EXIT_BREACH if breaches else 0
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
