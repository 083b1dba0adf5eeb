"""Views of task trees: lines, collapsed siblings, totals, the notebook's HTML (core.views)."""

from __future__ import annotations

import html
import re

import tasktrace
from tasktrace.core.units import friendly_bytes, friendly_duration


def test_a_task_displays_as_its_tree_in_notebooks() -> None:
    """``Task._repr_html_``: the tree with human units, for finished and running tasks."""
    with tasktrace.Task("experiment") as root:
        with tasktrace.Task("epoch 1 <b>"):
            pass
        running_html = root._repr_html_()
    assert "experiment" in running_html
    assert "running" in running_html
    assert "epoch 1 &lt;b&gt;" in running_html  # labels are escaped, never markup
    done_html = root._repr_html_()
    assert "finished" in done_html
    assert friendly_duration(root.duration) in done_html
    assert done_html.startswith("<pre")


def test_the_notebook_view_never_breaks_a_line() -> None:
    """Each task is one line of the notebook's ``<pre>``, however long; the browser scrolls it.

    A fixed console width broke long lines mid-phrase (``CPU`` at one line's end, ``energy 113.5 J``
    at the next's start).
    """
    label = "a task label long enough that its line cannot fit in one hundred and twenty columns"
    with tasktrace.Task("experiment") as root:
        for i in range(3):
            with tasktrace.Task(f"{label} {i}"):
                sum(range(10_000))
    page = root._repr_html_()
    pre = re.search(r"<pre[^>]*>(.*)</pre>", page, re.S)
    assert pre is not None
    lines = html.unescape(re.sub(r"<[^>]+>", "", pre.group(1))).splitlines()
    assert len(lines) == 4, lines  # the root and its three subtasks, one line each
    for i, task in enumerate(root.subtasks):
        line = lines[i + 1]
        assert f"{label} {i}  finished  {friendly_duration(task.duration)}" in line, line
        assert line.rstrip().endswith(friendly_bytes(task.peak_memory)), line  # its last field
        assert len(line) > 120
    assert "overflow-x: auto" in pre.group(0)[: pre.group(0).index(">")]  # scrolls, never wraps
