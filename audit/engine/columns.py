"""The one column dictionary: the report's own columns, then what each generator plugin and
each stage declares (generators/registry.py, audit/engine/pipeline.py). docs/columns.md is
generated from it (`python -m audit.docs`)."""

from __future__ import annotations

from audit.core.columns import Column
from audit.engine.pipeline import STAGES
from generators.registry import REGISTRY
from reports import columns as report_columns


def gather(*groups: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns in order, each name once.

    Args:
        groups: column tuples as their producers declare them.

    Returns:
        The union, first declaration first.

    Raises:
        ValueError: two producers describe one name differently.
    """
    found: dict[str, Column] = {}
    for group in groups:
        for column in group:
            if found.setdefault(column.name, column) != column:
                raise ValueError(f"column {column.name!r} is declared twice, differently")
    return tuple(found.values())


COLUMNS = gather(
    report_columns.REPORT_COLUMNS,
    *(plugin.columns for plugin in REGISTRY.values()),
    *(stage.columns for stage in STAGES),
)


def describe(name: str) -> Column | None:
    """The dictionary entry of a results column, or None if no producer declares it."""
    return report_columns.describe(name, COLUMNS)


def markdown() -> str:
    """docs/columns.md's generated part."""
    return report_columns.markdown(COLUMNS)
