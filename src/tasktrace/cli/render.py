"""The task tree on a terminal, shared by ``show``, ``run`` and the live panel."""

from __future__ import annotations

import functools

from rich.tree import Tree

from tasktrace.core.carbon import CarbonIntensity
from tasktrace.core.record import TaskRecord
from tasktrace.core.views import build_tree, task_line

__all__ = ["render_tree"]


def render_tree(
    task: TaskRecord, max_depth: int | None = None, carbon: CarbonIntensity | None = None
) -> Tree:
    """Build a :class:`rich.tree.Tree` of ``task`` and its subtasks, ``max_depth`` levels deep.

    With ``carbon`` (see :class:`tasktrace.core.carbon.CarbonIntensity`), each task with
    measured energy and a known intensity also shows its emissions in g CO₂e.
    """
    return build_tree(task, functools.partial(task_line, carbon=carbon), max_depth, collapse=False)
