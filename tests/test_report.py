"""The HTML report, rendered from a fixed run directory (tests/fixtures/run, a smoke run's saved
results): golden output, escaping, redaction and re-rendering with no recomputation."""

import functools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.core.store import RunDir
from reports.columns import BASE_COLUMNS
from reports.gallery import PrivateImages, image_grid
from reports.html import SECTIONS
from reports.render import build_report
from reports.results import results_csv
from reports.thresholds import load_thresholds

FIXTURE = Path(__file__).parent / "fixtures" / "run"
GOLDEN = Path(__file__).parent / "golden" / "report.html"
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def render(run: Path, *, redact: bool = False) -> str:
    store = RunDir(run)
    private = PrivateImages(None) if redact else PrivateImages.from_exhibits(store)
    results = store.read_json("results.json")
    return build_report(store, results, private=private, thresholds=load_thresholds())


@functools.cache
def fixture_html(redact: bool = False) -> str:
    return render(FIXTURE, redact=redact)


def normalised(html: str) -> str:
    """PNG bytes depend on the matplotlib and Pillow builds; the markup must not."""
    return DATA_URI.sub("data:image/png;base64,…", html)


def test_report_matches_golden_output():
    html = normalised(fixture_html())
    if os.environ.get("SYNTHAUDIT_UPDATE_GOLDEN"):
        GOLDEN.write_text(html)
    assert html == GOLDEN.read_text(), "set SYNTHAUDIT_UPDATE_GOLDEN=1 to accept a new report"


def test_report_has_every_section_and_only_inline_images():
    html = fixture_html()
    for section_id, heading in SECTIONS:
        assert f'<section id="{section_id}">' in html and f"<h2>{heading}</h2>" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "This report shows private images" in html
    # a smoke run memorises nothing: the default, holdout-relative verdict passes it (its utility
    # is at chance, which the default does not gate)
    assert "PASS:" in html and "FAIL:" not in html and "What the verdict means" in html


def test_redaction_removes_every_private_image():
    shown, redacted = fixture_html(), fixture_html(redact=True)
    private_tiles = shown.count('class="private"')
    assert private_tiles > 0 and 'class="redacted"' not in shown
    assert 'class="private"' not in redacted
    assert redacted.count('class="redacted"') == private_tiles
    assert len(DATA_URI.findall(redacted)) == len(DATA_URI.findall(shown)) - private_tiles
    assert "Private images are redacted" in redacted


def test_every_string_is_escaped(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    evil = '<script>alert("x")</script>'
    results = json.loads((run / "results.json").read_text())
    results["dataset"]["classes"][0] = evil
    results["dataset"]["name"] = evil
    (run / "results.json").write_text(json.dumps(results))
    manifest = json.loads((run / "config.json").read_text())
    manifest["command"] = ["audit", "run", "--out", f"runs/{evil}"]
    manifest["config"]["data_root"] = f"/data/{evil}"
    (run / "config.json").write_text(json.dumps(manifest))
    html = render(run)
    assert "<script" not in html
    assert html.count("&lt;script&gt;") >= 4  # title, dataset, command, config, class captions


def test_audit_report_rerenders_without_recomputing(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert set(after) - set(before) == {run / "report.html"}  # nothing else written
    assert all(after[p] == t for p, t in before.items())
    assert normalised((run / "report.html").read_text()) == normalised(fixture_html())
    redacted = tmp_path / "redacted.html"
    assert main(["report", str(run), "--redact-originals", "--out", str(redacted)]) == 0
    assert 'class="private"' not in redacted.read_text()


@pytest.mark.parametrize("argv", [["report", "nowhere"], ["report", "--thresholds", "x.toml"]])
def test_audit_report_bad_input_exits_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_csv_keeps_base_columns_first_and_blank_k_for_real():
    rows = json.loads((FIXTURE / "results.json").read_text())["rows"]
    header, *lines = results_csv(rows).splitlines()
    assert header.split(",")[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    assert [line.split(",")[:3] for line in lines] == [
        ["bn_match", "2", ""],
        ["bn_match", "4", ""],
        ["dp_vae", "", "10"],  # a DP row is keyed by its target epsilon, not a K
        ["real", "", ""],
        ["target", "", ""],
    ]


def test_csv_round_trips_awkward_cells():
    """Text with commas and quotes is quoted, blanks stay blank, integers stay integers."""
    import csv
    import io

    rows = [
        {"generator": 'a,"b"', "k": 3, "n_synthetic": 10, "nn_ssim_mean": 0.123456789},
        {"generator": "real", "k": None, "utility_acc": float("nan"), "extra": "x"},
    ]
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert parsed[0]["generator"] == 'a,"b"' and parsed[0]["k"] == "3"
    assert parsed[0]["nn_ssim_mean"] == "0.123457" and parsed[0]["extra"] == ""
    assert parsed[1]["k"] == "" and parsed[1]["utility_acc"] == "" and parsed[1]["extra"] == "x"


def test_grid_layout():
    rows = [np.full((3, 16, 16, 1), 7, np.uint8), np.full((2, 16, 16, 3), 9, np.uint8)]
    grid = image_grid(rows, scale=2, pad=1)
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
    assert grid[1, 1, 0] == 7 and grid[34, 1, 0] == 9 and grid[34, 67, 0] == 255


def test_verdict_table_shows_the_held_out_baseline_of_every_check():
    """Each gated check, exact copies included, is shown on held-out images too (not judged)."""
    html = fixture_html()
    rows = re.findall(
        r'<tr class="baseline"><td>real \(baseline\)</td><td class="l">(\w+)</td>', html
    )
    assert rows == [
        "max_exact_copies",
        "holdout_share_ssim",
        "holdout_share_haarpsi",
        "copy_count_ssim",
        "copy_count_haarpsi",
    ]
