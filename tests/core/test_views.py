"""Views of task trees: lines, collapsed siblings, totals, the notebook's HTML (core.views)."""

from __future__ import annotations

import tasktrace
from tasktrace.core.units import friendly_duration


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
