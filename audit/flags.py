"""How a setting becomes a flag: its name, its help's default, and the parser entry that leaves
it unset unless given."""

from __future__ import annotations

import argparse

from audit.core.presets import PRESETS

EXIT_BAD_INPUT = 2


def by_section(section: str, key: str) -> str:
    """A preset's setting inside a section ("vae", "epochs"), for help texts."""
    return ", ".join(f"{name} {p.get(section, {}).get(key)}" for name, p in PRESETS.items())


def by_preset(key: str, fallback: object = None) -> str:
    """A preset setting's value in each preset, for help texts: "quick 100, smoke 20, ..."."""

    def shown(value: object) -> str:
        if value is None:
            return "none"
        return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)

    return ", ".join(f"{name} {shown(p.get(key, fallback))}" for name, p in PRESETS.items())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def flag_of(setting: str) -> str:
    return "--" + setting.replace(".", "-").replace("_", "-")


def add_setting(
    parser: argparse.ArgumentParser, setting: str, *aliases: str, **options: object
) -> None:
    """A flag for one setting: named after it, default None ("not given": the config file's or
    the preset's value holds)."""
    dest = setting.replace(".", "__")
    SETTING_OF[dest] = setting
    parser.add_argument(flag_of(setting), *aliases, dest=dest, default=None, **options)  # type: ignore[arg-type]


# flag dest -> the setting it sets, in config.json's names ("bn.clamp_pixels"): a flag's name
# is its setting's, dots and underscores written as dashes (older spellings stay as aliases)
SETTING_OF: dict[str, str] = {}
