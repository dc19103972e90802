"""The `audit` command line: parse the flags (audit/arguments.py), run the subcommand, map errors
to exit statuses."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
import zipfile

from audit.arguments import EXIT_BAD_INPUT, build_parser, flag_settings
from audit.core import layout
from audit.core.errors import AuditError

EXIT_BREACH = 1  # audit check: a release crossed a threshold


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from audit.api import configure, run_audit
    from audit.engine.build import dry_run

    config = configure(args.config, flag_settings(args))
    if args.dry_run:  # with the --out (or file's out) of an earlier run: what it would reuse
        print(dry_run(config))
        return 0
    if config.mia_refs:
        logging.getLogger("audit").info(
            "--mia-refs %d: %d reference pipelines, each roughly the main pipeline's cost "
            "(`audit run --dry-run` estimates every task)",
            config.mia_refs,
            config.mia_refs,
        )
    root = run_audit(
        config,
        overwrite=args.overwrite,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        argv=argv,
    )
    from reports.summary import render_summary, summary_rows
    from reports.thresholds import check, load_thresholds
    from reports.verdict import load_run_results, passed_by_release, summary_lines

    thresholds = load_thresholds()
    store, results = load_run_results(root)
    verdicts = check(store, results, thresholds)
    for line in summary_lines(verdicts):
        print(line)
    print()
    print(render_summary(summary_rows(results["rows"], passed_by_release(verdicts))))
    print(f"(verdict: {thresholds.source}; `audit check {root}` gives it as an exit status)")
    print(f"report: {root / layout.REPORT}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from audit.core.store import write_text_atomic
    from reports.gallery import PrivateImages
    from reports.render import build_report
    from reports.thresholds import load_thresholds
    from reports.verdict import load_run_results

    thresholds = load_thresholds(args.thresholds)
    store, results = load_run_results(args.dir)
    private = PrivateImages(None) if args.redact_originals else PrivateImages.from_exhibits(store)
    html = build_report(store, results, private=private, thresholds=thresholds)
    out = args.out or str(store.path(layout.REPORT))
    write_text_atomic(out, html)
    print(f"report: {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from reports.verdict import gate_run, summary_lines, verdict_document

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
