"""The report page's HTML: what the browser needs to put each figure where it belongs."""

from __future__ import annotations

import collections
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import tasktrace

from .cli_helpers import run_cli
from .conftest import FIXTURES


class _Ids(HTMLParser):
    """Collects every element's ``id`` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del tag
        self.ids += [value for name, value in attrs if name == "id" and value is not None]


def test_every_element_id_is_unique_so_each_figure_is_drawn_in_its_own_div(
    tmp_path: Path,
) -> None:
    """Plotly finds a figure's ``<div>`` by its id: an id used twice drew it elsewhere.

    The comparison table's ``<div>`` had the id of its ``<section>``; ``getElementById`` gives
    the first, so plotly drew the table into the section (at the page's width, whatever room
    its div was given) and left its own 800-pixel ``<div>`` empty below it.
    """
    out = tmp_path / "report.html"
    files = [FIXTURES / "nested.json", FIXTURES / "failed.json"]
    page = tasktrace.report(files, out).read_text()
    parser = _Ids()
    parser.feed(page)
    repeated = {i: n for i, n in collections.Counter(parser.ids).items() if n > 1}
    assert repeated == {}
    drawn = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', page)
    assert "comparison" in drawn  # the ids plotly draws into are among those checked
    assert set(drawn) <= set(parser.ids)


def test_hover_shows_structured_extra_data_as_json_and_leaves_the_meters_to_the_facts(
    tmp_path: Path,
) -> None:
    """A task's dict and list extra data read as JSON in its hover, as in the task file.

    Python's repr (``{'acc': 0.9, 'ok': True}``) showed instead, and a ``tasktrace run``
    root's ``meters`` record, which the run's facts already give meter by meter, showed as a
    repr cut at 120 characters.
    """
    (tmp_path / "job.py").write_text(
        "from tasktrace import Task\n"
        "with Task('job', metrics={'acc': 0.9, 'ok': True, 'note': None}, folds=[1, 2]):\n"
        "    pass\n"
    )
    done = run_cli(["run", "-q", "-f", "run.json", "--", sys.executable, "job.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    page = tasktrace.report(tmp_path / "run.json", tmp_path / "r.html").read_text()
    hover = page.replace("\\u003cbr\\u003e", "\n")  # plotly's JSON escapes <br>
    assert "metrics: {&quot;acc&quot;: 0.9, &quot;ok&quot;: true, &quot;note&quot;: null}" in hover
    assert "folds: [1, 2]" in hover
    assert "{&#x27;" not in hover  # no Python repr of a dict anywhere
    assert "\nmeters: " not in hover
    assert "prometheus: not available" in page or "prometheus: available" in page  # facts
