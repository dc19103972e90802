"""The generated parts of docs/: the CLI defaults table (from the parser and the presets) and the
column dictionary (reports/columns.py). `python -m audit.docs` rewrites them in place;
`python -m audit.docs --check` exits 1 when a file is stale (a test runs the check).

A generated part sits between `<!-- BEGIN generated: NAME -->` and `<!-- END generated -->`;
everything around it is written by hand."""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

from audit.arguments import NOT_SETTINGS, SHORTHANDS, build_parser
from audit.core.config import RunConfig, build_config
from audit.core.presets import PRESETS
from audit.flags import SETTING_OF

DOCS = Path(__file__).resolve().parents[1] / "docs"
# settings whose default depends on the machine or the clock, described instead of resolved
DESCRIBED = {
    "device": "auto (cuda when torch sees a GPU, else cpu)",
    "threads": "torch's default (the CPU count)",
    "out": "runs/<time>-<config digest>",
    "preset": "quick",
}
# what "none" means for settings whose default is None
NONE_MEANS = {
    "real_utility_seeds": "none (= utility_seeds)",
    "max_members": "none (no cap)",
    "max_nonmembers": "none (no cap)",
    "max_test": "none (no cap)",
    "fed.noise_multiplier": "none (solved per epsilon)",
}


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@functools.cache
def _preset_config(preset: str) -> RunConfig:
    """What a preset resolves to with nothing else given (machine-dependent values pinned)."""
    return build_config(preset=preset, threads=1, device="cpu")


def _resolved(setting: str) -> str:
    """The setting's value under each preset with nothing else given: one value, or one per
    preset where they differ."""
    if setting in DESCRIBED:
        return DESCRIBED[setting]
    values = {}
    for preset in PRESETS:
        value: object = _preset_config(preset)
        for part in setting.split("."):
            value = getattr(value, part)
        values[preset] = NONE_MEANS.get(setting, "none") if value is None else _shown(value)
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{preset} {value}" for preset, value in values.items())


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cli_table() -> str:
    """Every `audit run` flag: the setting it sets (config.json's and the config file's name),
    its default with nothing else given (per preset where they differ) and its help."""
    run = _subparser(build_parser(), "run")
    lines = [
        "| flag | setting (config file, config.json) | default | what it does |",
        "|---|---|---|---|",
    ]
    for action in run._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.dest == "help":
            continue
        flags = ", ".join(f"`{flag}`" for flag in action.option_strings)
        setting = SETTING_OF.get(action.dest)
        if setting is not None:
            default = _resolved(setting)
            named = f"`{setting}`"
        elif action.dest in SHORTHANDS:
            default, named = "paper", "(shorthand for several `bn.*` settings)"
        else:
            assert action.dest in NOT_SETTINGS, action.dest
            default = _shown(action.default) if action.default is not False else "no"
            named = "(not a setting: not recorded)"
        help_text = re.sub(r"\s+", " ", str(action.help))
        lines.append(f"| {flags} | {named} | {_cell(default)} | {_cell(help_text)} |")
    return "\n".join(lines)


def columns_table() -> str:
    from audit.engine.columns import markdown

    return markdown().rstrip()


GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "cli-defaults": ("cli.md", cli_table),
    "columns": ("columns.md", columns_table),
}


def rewrite(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN generated: {name} -->", "<!-- END generated -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"no generated region {name!r}")
    return pattern.sub(lambda _m: f"{begin}\n{body}\n{end}", text, count=1)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for name, (file, generate) in GENERATED.items():
        path = DOCS / file
        text = path.read_text()
        new = rewrite(text, name, generate())
        if new != text:
            stale.append(file)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run `python -m audit.docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
