"""Every flag of every `audit` subcommand, and its help text: the only place flags are defined."""

from __future__ import annotations

import argparse
from typing import NoReturn

from audit.core.sections import BN_LOSS_VARIANTS
from audit.flags import SETTING_OF
from audit.run_flags import add_run_flags

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


SHORTHANDS = ("bn_loss",)  # flags that expand into several settings
NOT_SETTINGS = ("config", "overwrite", "executor", "ray_address", "ray_cpus", "dry_run")


def flag_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings the flags give, nested as in config.json ({"bn": {"lr": ...}}); the
    --bn-loss shorthand expands beneath explicit --bn-* flags."""
    settings: dict[str, object] = {}
    if getattr(args, "bn_loss", None):
        settings["bn"] = dict(BN_LOSS_VARIANTS[args.bn_loss])
    for dest, setting in SETTING_OF.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if "." in setting:
            section, key = setting.split(".")
            settings.setdefault(section, {})[key] = value  # type: ignore[index]
        else:
            settings[setting] = value
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audit", description="Privacy and utility audit of synthetic image sets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="generate synthetic sets and audit them")
    add_run_flags(run)
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
