"""Render the HTML report to a string (jinja2 with autoescaping: every value is escaped)."""

from __future__ import annotations

import math
from typing import Any

import jinja2

from reports.gallery import GalleryEntry
from reports.results import columns


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = _fmt
    return env


def render_report(results: dict[str, Any], gallery: list[GalleryEntry], *, redacted: bool) -> str:
    rows = results["rows"]
    return (
        _environment()
        .get_template("report.html")
        .render(
            results=results,
            columns=columns(rows),
            rows=rows,
            gallery=gallery,
            redacted=redacted,
        )
    )
