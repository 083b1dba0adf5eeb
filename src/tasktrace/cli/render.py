"""The task tree on a terminal, shared by ``show``, ``run`` and the live panel; the console."""

from __future__ import annotations

import functools
import shlex

from rich.tree import Tree

from tasktrace.cli.boundary import Console
from tasktrace.core.carbon import CarbonIntensity
from tasktrace.core.record import TaskRecord
from tasktrace.core.views import UNWRAPPED_WIDTH, build_tree, printable, task_line

__all__ = ["UNWRAPPED_WIDTH", "command_note", "output_console", "render_tree"]


def output_console(*, stderr: bool = False) -> Console:
    """Return the console the commands print to: stdout, or stderr with ``stderr=True``.

    On a terminal, rich's own (lines wrap at the terminal's width). Elsewhere (a pipe, a file:
    ``tasktrace show run.json | grep epoch``) lines are never wrapped, so each task stays on one
    line whatever ``COLUMNS`` says; ``--json`` remains the form for programs.
    """
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH)


def render_tree(
    task: TaskRecord, max_depth: int | None = None, carbon: CarbonIntensity | None = None
) -> Tree:
    """Build a :class:`rich.tree.Tree` of ``task`` and its subtasks, ``max_depth`` levels deep.

    With ``carbon`` (see :class:`tasktrace.core.carbon.CarbonIntensity`), each task with
    measured energy and a known intensity also shows its emissions in g CO₂e.
    """
    return build_tree(task, functools.partial(task_line, carbon=carbon), max_depth, collapse=False)


def command_note(task: TaskRecord) -> list[str]:
    """Return ``["command: python train.py --lr 3"]`` for a run recorded with ``--record-argv``.

    ``task``'s ``argv`` extra data (a list of strings, redacted when it was recorded), shell
    quoted; ``[]`` when it has none. The label is the program alone (see
    :mod:`tasktrace.cli.run_label`), so this line is where ``show`` and ``run`` give the rest.
    """
    argv = (task.__pydantic_extra__ or {}).get("argv")
    if not isinstance(argv, list) or not argv or not all(type(w) is str for w in argv):
        return []
    return [f"command: {printable(shlex.join(argv))}"]
