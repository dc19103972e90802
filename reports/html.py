"""Render the HTML report to a string (jinja2 with autoescaping: every value is escaped)."""

from __future__ import annotations

import json
import math
from typing import Any

import jinja2

from audit.core import layout
from reports.results import columns

# The report's sections, in order: (id, heading). The browser test checks each one renders.
SECTIONS = (
    ("verdict", "Verdict"),
    ("dp", "Differential-privacy claims"),
    ("tradeoff", "Privacy-utility trade-off"),
    ("releases", "Per release"),
    ("results", "All results"),
    ("membership", "Membership inference"),
    ("nearest", "Released images beside their nearest private images"),
    ("samples", "Samples per class"),
    ("exposed", "Most exposed records"),
    ("reconstruction", "Reconstruction: inversion and HCR bounds"),
    ("setup", "Configuration, versions and time"),
)


def _fmt(value: Any, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True)
    return env


def render_report(context: dict[str, Any]) -> str:
    rows = context["results"]["rows"]
    return (
        _environment()
        .get_template(layout.REPORT)
        .render(**context, columns=columns(rows), rows=rows, sections=SECTIONS)
    )
