"""The report page's HTML: what the browser needs to put each figure where it belongs."""

from __future__ import annotations

import collections
import re
from html.parser import HTMLParser
from pathlib import Path

import tasktrace

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
