"""The report stage: results.json, results.csv and report.html from every stage's outputs."""

from __future__ import annotations

from audit.core import layout
from audit.core.layout import row_of
from audit.engine.context import TaskContext


def stage_report(ctx: TaskContext) -> None:
    from reports.gallery import PrivateImages
    from reports.render import build_report, save_exhibits
    from reports.results import collect_results, results_csv
    from reports.thresholds import check, load_thresholds
    from reports.verdict import verdict_document

    results = collect_results(ctx.store, ctx.config, ctx.data)
    thresholds = load_thresholds()
    # the verdict under the shipped thresholds, as `audit check --json` gives it; any other file
    # judges the same results with `audit check DIR --thresholds FILE`
    verdicts = check(ctx.store, results, thresholds)
    document = verdict_document(ctx.store.root, thresholds, verdicts)
    results["verdict"] = {k: v for k, v in document.items() if k not in ("schema_version", "run")}
    for row in results["rows"]:
        entry = document["releases"].get(row_of(row))
        row["verdict"] = None if entry is None else ("pass" if entry["passed"] else "fail")
    images = ctx.data.images
    private = PrivateImages(None if ctx.config.redact_originals else images.__getitem__)
    # render before writing anything, so a failure leaves no results file looking final
    html = build_report(ctx.store, results, private=private, thresholds=thresholds)
    if not private.redacted:  # what `audit report` needs to re-render without the dataset
        save_exhibits(ctx.store, private, images)
    ctx.store.write_json(layout.RESULTS, results)
    ctx.store.write_text(layout.RESULTS_CSV, results_csv(results["rows"]))
    ctx.store.write_text(layout.REPORT, html)
