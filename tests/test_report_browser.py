"""The report in real headless Chromium: every section renders with height, every image decodes,
no console messages; a screenshot is saved. Chromium comes from Debian (`chromium`; .ci/run
installs it). Without it the test skips locally and fails under CI=true."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from audit.cli import main
from reports.html import SECTIONS

FIXTURE = Path(__file__).parent / "fixtures" / "run"
# loads the report in a same-directory iframe and writes what it measured into the page
HARNESS = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="report.html" style="width:1280px;height:900px"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const sections = Object.fromEntries(
    Array.from(doc.querySelectorAll("section")).map(s => [s.id, s.offsetHeight]));
  const images = Array.from(doc.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.getElementById("result").textContent =
    JSON.stringify({sections, images: images.length, broken});
});
</script></body></html>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    report = tmp_path / "report.html"
    assert main(["report", str(FIXTURE), "--out", str(report)]) == 0
    (tmp_path / "harness.html").write_text(HARNESS)
    loaded = run_chromium(
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        (tmp_path / "harness.html").as_uri(),
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    found = re.search(r'<pre id="result">([^<]*)</pre>', loaded.stdout)
    assert found, loaded.stdout[-2000:]
    measured = json.loads(found.group(1))
    assert list(measured["sections"]) == [section_id for section_id, _ in SECTIONS]
    assert all(height > 50 for height in measured["sections"].values()), measured["sections"]
    assert measured["images"] > 100 and measured["broken"] == 0, measured
    console = [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console

    screenshot = tmp_path / "report.png"
    shot = run_chromium(
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={screenshot}",
        report.as_uri(),
    )
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as picture:
        assert picture.size == (1280, 2400)
        low, high = picture.convert("L").getextrema()
        assert high - low > 100  # not a blank page
    if keep := os.environ.get("SYNTHAUDIT_SCREENSHOT_DIR"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / "report.png")
