"""The report stage: results.json, results.csv and report.html from every stage's outputs."""

from __future__ import annotations

from audit.run import Run


def stage_report(run: Run) -> None:
    from reports.gallery import PrivateImages
    from reports.render import build_report, save_exhibits
    from reports.results import collect_results, results_csv
    from reports.thresholds import load_thresholds

    results = collect_results(run.store, run.config, run.data)
    images = run.data.images
    private = PrivateImages(None if run.config.redact_private else images.__getitem__)
    # render before writing anything, so a failure leaves no results file looking final
    html = build_report(run.store, results, private=private, thresholds=load_thresholds())
    if not private.redacted:  # what `audit report` needs to re-render without the dataset
        save_exhibits(run.store, private, images)
    run.store.write_json("results.json", results)
    run.store.write_text("results.csv", results_csv(results["rows"]))
    run.store.write_text("report.html", html)
