"""The report's tables in a real browser: no text is cut off by its column, however many runs.

Plotly draws a table in the width of its ``<div>`` and clips each column's text at the column's
edge; a number (``205ms``) has no space to wrap at, so in a column narrower than the number its
first digits were cut off and ``205ms`` read ``05ms``. Run with ``make test-browser`` or
``.venv/bin/python -m pytest -m browser``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tasktrace

from .cli_helpers import run_cli
from .conftest import FIXTURES

pytestmark = pytest.mark.browser

CELL_PAD_PX = 8
"""Plotly's padding of a table cell's text (``cellPad``): the text starts this far into it."""

_LINES = """(figure) => {
    const out = [];
    const columns = Array.from(document.querySelectorAll(`${figure} .y-column`));
    columns.forEach((column, k) => {
        const rect = column.querySelector('.column-block rect.cell-rect');
        for (const block of column.querySelectorAll('.column-block')) {
            for (const text of block.querySelectorAll('text.cell-text')) {
                const spans = Array.from(text.querySelectorAll('tspan'));
                const lines = spans.length ? spans : [text];
                const wrapped = k > 0 && block.id.startsWith('cells') && lines.length > 1;
                for (const line of lines) {
                    out.push([line.textContent, line.getComputedTextLength(),
                              rect.getBBox().width, wrapped]);
                }
            }
        }
    });
    return out;
}"""
"""Every line of text of a plotly table: its text, drawn length, its column's width (px), and
whether it is a line of a wrapped cell in a column of numbers."""

_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from tasktrace import Task, child_environment
    child = "from tasktrace import Task\\nwith Task('evaluate in a child'):\\n    sum(range(10**6))"
    with Task("experiment", file="experiment.json"):
        for epoch in range(3):
            with Task(f"epoch {epoch}"):
                for batch in range(4):
                    with Task(f"batch {batch}"):
                        sum(range(10**5))
        with Task("subprocess evaluation"):
            subprocess.run([sys.executable, "-c", child], env=child_environment(), check=True)
    """
)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Return a program's task file, the same program's ``tasktrace run`` file, a LensKit one."""
    folder = tmp_path_factory.mktemp("tables")
    (folder / "experiment.py").write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    subprocess.run([sys.executable, "experiment.py"], cwd=folder, env=env, check=True, timeout=60)
    (folder / "experiment.json").rename(folder / "program.json")
    done = run_cli(["run", "-q", "-f", "run.json", "--", sys.executable, "experiment.py"], folder)
    assert done.returncode == 0, done.stderr
    return [folder / "program.json", folder / "run.json", FIXTURES / "nested.json"]


@pytest.mark.parametrize("width", [1400, 900])
def test_no_table_text_is_cut_off_by_its_column(
    three_runs: list[Path], tmp_path: Path, width: int
) -> None:
    """Three runs side by side: every line of every table fits inside its column, unwrapped."""
    from .browser_helpers import CHROMIUM, RENDERED, chromium

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's package")
    page_file = tasktrace.report(three_runs, tmp_path / "report.html")
    with chromium(width=width, height=1000) as browser:
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_selector(RENDERED, timeout=30_000)
        page.wait_for_selector("#comparison .y-column")
        cut, wrapped = [], []
        for figure in ("#labels-0", "#labels-1", "#labels-2", "#comparison"):
            lines = page.evaluate(_LINES, figure)
            assert lines, figure  # the table was drawn
            cut += [(figure, t, round(n), w) for t, n, w, _ in lines if n + CELL_PAD_PX > w]
            wrapped += [(figure, t) for t, _, _, w in lines if w]
        assert cut == [], "\n".join(map(str, cut))
        assert wrapped == []  # a number and its unit stay on one line: rows keep their height
