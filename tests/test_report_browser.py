"""The HTML report in a real browser: Debian's headless Chromium renders it offline.

Run with ``make test-browser`` (installs the ``chromium`` package where missing) or
``.venv/bin/python -m pytest -m browser``. Saves ``docs/_static/report-demo.png``, the
screenshot in the docs page "Reports and comparisons".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import tasktrace

from .conftest import FIXTURES

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "_static" / "report-demo.png"


_LABEL_COLUMN = """(figure) => {
    const columns = Array.from(document.querySelectorAll(`${figure} .y-column`));
    const texts = c => Array.from(c.querySelectorAll('text.cell-text'));
    const label = columns.find(c => texts(c).some(t => t.textContent === 'label'));
    return texts(label).map(t => t.textContent);
}"""
"""The texts of a plotly table's "label" column (with its header), read from the DOM."""


def _labels(path: Path) -> list[str]:
    stack, labels = [json.loads(path.read_text())], []
    while stack:
        task = stack.pop()
        labels.append(task["label"])
        stack.extend(task.get("subtasks") or [])
    return labels


def _squash(text: str) -> str:
    """Text without whitespace: plotly wraps table cells into lines."""
    return re.sub(r"\s+", "", text)


def test_report_renders_icicle_and_table_with_every_task(
    demo_runs: dict[int, Path], tmp_path: Path
) -> None:
    """Chromium draws the icicle and the per-label table of each run, naming every task."""
    from .browser_helpers import CHROMIUM, RENDERED, chromium

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's package")
    files = [demo_runs[5], FIXTURES / "nested.json", FIXTURES / "failed.json"]
    page_file = tasktrace.report(files, tmp_path / "report.html")
    with chromium() as browser:
        page = browser.new_page()
        page.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())  # offline only
        page.goto(page_file.as_uri())
        page.wait_for_selector(RENDERED, timeout=30_000)
        for k, path in enumerate(files):
            icicle = page.eval_on_selector_all(
                f"#icicle-{k} g.slice text.slicetext", "els => els.map(e => e.textContent)"
            )
            assert sorted(icicle) == sorted(_labels(path)), path.name
            table = page.evaluate(_LABEL_COLUMN, f"#labels-{k}")
            patterns = {re.sub(r"\d+", "#", label) for label in _labels(path)}
            assert {_squash(p) for p in patterns} <= {_squash(t) for t in table}, path.name
        failed = page.eval_on_selector_all(
            "#icicle-2 g.slice path.surface", "els => els.map(e => e.style.fill)"
        )
        assert "rgb(214, 39, 40)" in failed  # the failed LensKit task stands out in red

        page.click("#icicle-0 .updatemenu-button >> text=CPU time")
        page.wait_for_function(
            "() => document.querySelector('#icicle-0 .gtitle').textContent"
            " === 'Tasks sized by CPU time'"
        )
        page.hover("#icicle-0 g.slice:nth-of-type(3)")
        hover = page.wait_for_selector("#icicle-0 .hoverlayer .hovertext")
        assert "CPU time:" in hover.text_content()


def test_screenshot_of_the_demo_report_for_the_docs(
    demo_runs: dict[int, Path], tmp_path: Path
) -> None:
    """The demo's report with 5 and 3 epochs side by side renders; its screenshot goes to docs."""
    from .browser_helpers import CHROMIUM, RENDERED, chromium

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's package")
    runs = tmp_path / "runs"  # the test runs in tmp_path: the page shows runs/...json
    runs.mkdir()
    for epochs in (5, 3):
        (runs / f"demo-{epochs}.json").write_bytes(demo_runs[epochs].read_bytes())
    page_file = tasktrace.report(
        ["runs/demo-5.json", "runs/demo-3.json"],
        tmp_path / "demo.html",
        names=["5 epochs", "3 epochs"],
    )
    with chromium(width=1400, height=900) as browser:
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_selector("#comparison .table", timeout=30_000)
        page.wait_for_selector(RENDERED)
        assert page.locator("#icicle-1 g.slice").count() == len(_labels(demo_runs[3]))
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 50_000


_BOX = """(selector) => Array.from(document.querySelectorAll(selector)).map(e => {
    const r = e.getBoundingClientRect();
    return [r.left, r.top, r.right, r.bottom];
})"""
"""The page boxes ``[left, top, right, bottom]`` of the elements a selector finds, in pixels."""


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_charts_keep_their_space_with_a_huge_label_and_the_icicle_title_shows(
    tmp_path: Path,
) -> None:
    """A 5,000-character label is cut in the charts; the icicle's title is not under its buttons.

    Plotly widened the timeline's left margin to its widest tick label: the plot was about 50 px
    wide (persona report, uni.png); the icicle's title sat where its measure buttons are drawn,
    hidden (rep2.png).
    """
    from .browser_helpers import CHROMIUM, RENDERED, chromium

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's package")
    path = tmp_path / "huge.json"
    with tasktrace.Task("run", file=path):
        with tasktrace.Task("L" * 5000):
            sum(range(100_000))
        with tasktrace.Task("short"):
            sum(range(100_000))
    page_file = tasktrace.report([path], tmp_path / "report.html")
    with chromium(width=1400, height=1000) as browser:
        page = browser.new_page()
        page.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())  # offline only
        page.goto(page_file.as_uri())
        page.wait_for_selector(RENDERED, timeout=30_000)
        figure = page.evaluate(_BOX, "#timeline-0 .main-svg")[0]
        (plot,) = page.evaluate(_BOX, "#timeline-0 .nsewdrag")  # the plot area
        assert plot[2] - plot[0] >= 0.5 * (figure[2] - figure[0]), (plot, figure)
        ticks = page.eval_on_selector_all(
            "#timeline-0 .ytick text", "els => els.map(e => e.textContent)"
        )
        assert any(t.strip().startswith("LLL") and t.endswith("…") for t in ticks), ticks
        (title,) = page.evaluate(_BOX, "#icicle-0 .gtitle")
        buttons = page.evaluate(_BOX, "#icicle-0 .updatemenu-button")
        assert buttons
        assert not any(_overlap(title, button) for button in buttons), (title, buttons)
        slices = page.evaluate(_BOX, "#icicle-0 .iciclelayer")[0]
        assert title[3] <= slices[1], (title, slices)  # above the chart
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
