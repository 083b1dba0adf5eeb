"""Time ``tasktrace report`` on a 100,000-task file, and the page's load in headless Chromium.

Usage: python benchmarks/report_100k.py [--keep FOLDER]

Builds the file of ``benchmarks/show_100k.py`` (10 phases × 10,000 steps), runs
``tasktrace report`` on it in a fresh interpreter (target: < 10 s) and loads the page in Debian's
headless Chromium (through Playwright, as the browser test does) until the icicle, the timeline
and the per-label table are drawn (target: < 5 s). Without Chromium or Playwright, the page load
is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.show_100k import build

REPORT_TARGET_S = 10.0
LOAD_TARGET_S = 5.0
DRAWN = (
    "#icicle-0 g.iciclelayer path.surface",
    "#timeline-0 g.barlayer path",
    "#labels-0 text.cell-text",
)


def page_load_s(page_file: Path) -> float | str:
    """Seconds from navigation until every chart is drawn, or why it was not measured."""
    try:
        from tests.browser_helpers import CHROMIUM, chromium
    except ImportError as e:
        return f"skipped: {e}"
    if not CHROMIUM.exists():
        return f"skipped: no Chromium at {CHROMIUM} (sh .ci/install-chromium.sh)"
    with chromium() as browser:
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(page_file.as_uri())
        for selector in DRAWN:
            page.wait_for_selector(selector, timeout=60_000)
        return time.perf_counter() - start


def main() -> None:
    """Build the file, time the report and the page load; print both against their targets."""
    folder = (
        Path(sys.argv[2])
        if len(sys.argv) > 2 and sys.argv[1] == "--keep"
        else Path(tempfile.mkdtemp())
    )
    path, page_file = folder / "100k.json", folder / "100k.html"
    n = build(path)
    print(f"{n} tasks, {path.stat().st_size / 1e6:.1f} MB")
    exe = Path(sys.executable).with_name("tasktrace")
    start = time.perf_counter()
    subprocess.run([str(exe), "report", str(path), "-o", str(page_file), "--force"], check=True)
    report_s = time.perf_counter() - start
    met = "met" if report_s < REPORT_TARGET_S else "MISSED"
    print(
        f"tasktrace report: {report_s:.2f} s (target < {REPORT_TARGET_S:.0f} s: {met}), "
        f"{page_file.stat().st_size / 1e6:.1f} MB of HTML"
    )
    load = page_load_s(page_file)
    if isinstance(load, str):
        print(f"page load in Chromium: {load}")
    else:
        met = "met" if load < LOAD_TARGET_S else "MISSED"
        print(f"page load in Chromium: {load:.2f} s (target < {LOAD_TARGET_S:.0f} s: {met})")


if __name__ == "__main__":
    main()
