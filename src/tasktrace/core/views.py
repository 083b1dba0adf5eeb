"""Views of task trees for ``tasktrace show`` and notebooks.

One line per task (:mod:`tasktrace.core.lines`, whose names are re-exported here), filter,
collapse repeated siblings, totals.

All functions work on loaded :class:`~tasktrace.Task` trees without modifying them (filtered
trees are shallow copies) and walk them iteratively, so a 100,000-task tree costs no recursion.
"""

from __future__ import annotations

import functools
import gc
import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import PrivateAttr
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from tasktrace.core.carbon import CarbonIntensity, usage_values
from tasktrace.core.lines import (
    CORES_SHOWN_ABOVE,
    cpu_text,
    is_command,
    memory_text,
    printable,
    task_line,
)
from tasktrace.core.record import TaskRecord as Task  # the record: every view reads fields only
from tasktrace.core.record import TaskStatus
from tasktrace.core.units import friendly_duration, valid_measure

__all__ = [
    "AUTO_COLLAPSE_TASKS",
    "COLLAPSE_MIN_RUN",
    "CORES_SHOWN_ABOVE",
    "UNWRAPPED_WIDTH",
    "SiblingRun",
    "collapse_siblings",
    "count_tasks",
    "cpu_text",
    "filter_tree",
    "is_command",
    "label_pattern",
    "label_totals",
    "memory_text",
    "paused_gc",
    "printable",
    "pruned_copy",
    "render_collapsed",
    "run_name",
    "task_line",
    "tree_html",
]

COLLAPSE_MIN_RUN = 3
"""Fewest consecutive siblings with the same label pattern that are collapsed into one line."""

UNWRAPPED_WIDTH = 1_000_000
"""The width, in characters, of a console whose lines must never wrap (a pipe, a file, the
notebook view): wide enough for any line, and rich pads nothing to it (a line is as long as its
text)."""

AUTO_COLLAPSE_TASKS = 1000
"""Above this many tasks in view, ``show`` collapses repeated siblings unless given ``--all``
(rich renders about 10,000 tree lines a second; a 100,000-task tree would take 10 s or more)."""

_DIGITS = re.compile(r"\d+")
_T = TypeVar("_T", bound=Task)


def label_pattern(label: str) -> str:
    """Replace every run of digits in a label by ``#`` (``"epoch 12"`` → ``"epoch #"``)."""
    return _DIGITS.sub("#", label)


def _matches(task: Task, needle: str) -> bool:
    if needle in task.label.lower():
        return True
    tags = (task.__pydantic_extra__ or {}).get("tags")
    if isinstance(tags, str):  # one tag, as a file from LensKit or an older tasktrace has it
        tags = [tags]
    return isinstance(tags, list | tuple) and any(str(t).lower() == needle for t in tags)


def filter_tree(task: Task, text: str) -> Task | None:
    """Keep tasks whose label contains ``text`` or whose ``tags`` include it (case-insensitive).

    A matching task keeps its whole subtree; ancestors of matches are kept (with only the
    branches that lead to matches) so the tree still reads from the root.

    Returns:
        A filtered shallow copy of the tree, or ``None`` when nothing matches.
    """
    needle = text.lower()
    # post-order walk without recursion: kept[id(node)] = filtered copy or None
    kept: dict[int, Task | None] = {}
    stack: list[tuple[Task, bool]] = [(task, False)]
    while stack:
        node, done = stack.pop()
        if _matches(node, needle):
            kept[id(node)] = node
            continue
        if not done:
            stack.append((node, True))
            stack.extend((child, False) for child in node.subtasks)
            continue
        children = [k for c in node.subtasks if (k := kept.get(id(c))) is not None]
        kept[id(node)] = pruned_copy(node, children) if children else None
    return kept[id(task)]


@functools.cache
def _pruned_class(cls: type[Task]) -> type[Task]:
    """``cls`` (the tree's node class), its ``total_cpu`` the whole task's (see below)."""

    class Pruned(cls):  # type: ignore[valid-type, misc]  # a class made at run time
        _whole: Task | None = PrivateAttr(default=None)

        def total_cpu(self) -> float | None:
            whole = self._whole
            return super().total_cpu() if whole is None else whole.total_cpu()

    Pruned.__name__ = Pruned.__qualname__ = cls.__name__
    return Pruned


def pruned_copy(task: _T, subtasks: Sequence[Task]) -> _T:
    """Return a shallow copy of ``task`` with ``subtasks`` below it, measuring as ``task`` does.

    A view that leaves subtasks out (``show --filter``, ``--depth`` with ``--json``, the live
    panel's running tasks) decides which lines are shown, never what a shown task measured:
    the copy's :meth:`~tasktrace.Task.total_cpu` (and so every figure of its line and of
    ``--totals``) is ``task``'s on the whole tree, counting the CPU its subprocess subtasks
    reported whether they are shown or not. Its fields, extra data and JSON are ``task``'s
    but for ``subtasks``; ``task`` is not modified.
    """
    copy = task.model_copy(update={"subtasks": list(subtasks)})
    object.__setattr__(copy, "__class__", _pruned_class(type(task)))
    private = dict(copy.__pydantic_private__ or {})
    private["_whole"] = task
    object.__setattr__(copy, "__pydantic_private__", private)
    return copy


@dataclass
class SiblingRun:
    """Consecutive siblings whose labels share a pattern, shown as one line.

    Attributes:
        tasks: The siblings, in order (at least :data:`COLLAPSE_MIN_RUN`).
    """

    tasks: list[Task] = field(default_factory=list)

    @property
    def total_duration_s(self) -> float:
        """Sum of the known durations, in seconds."""
        return sum(t.duration for t in self.tasks if t.duration is not None)

    def name(self) -> str:
        """Return the labels in one: ``"epoch 1…50"`` (the one number that varies as a range).

        The range runs from the lowest to the highest number, whatever the siblings' order
        (workers' tasks arrive as they finish: ``fold 2, 0, 1, 3`` is ``"fold 0…3"``). Labels
        that differ in more than one number are shown as the first and the last.
        """
        return run_name([t.label for t in self.tasks])

    def title(self) -> str:
        """``"epoch 1…50: 50 tasks, total 3m12.00s"`` (plus failed/other status counts)."""
        name = self.name()
        text = f"{name}: {len(self.tasks)} tasks, total {friendly_duration(self.total_duration_s)}"
        counts: dict[str, int] = {}
        for t in self.tasks:
            if t.status is not TaskStatus.FINISHED:
                counts[t.status.value] = counts.get(t.status.value, 0) + 1
        if counts:
            text += " (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"
        return text


def run_name(labels: Sequence[str]) -> str:
    """Return labels of one :func:`label_pattern` in one, as :meth:`SiblingRun.name` does.

    ``"epoch 1…50"``: the one number that varies as a range from its lowest to its highest
    value; labels that differ in more than one number as the first and the last.
    """
    numbers = [_DIGITS.findall(label) for label in labels]
    varying = {k for n in numbers for k, x in enumerate(n) if x != numbers[0][k]}
    if len(varying) != 1:
        return labels[0] if not varying else f"{labels[0]} … {labels[-1]}"
    (i,) = varying
    column = [n[i] for n in numbers]
    span = f"{min(column, key=int)}…{max(column, key=int)}"
    return "".join(
        part + (span if k == i else numbers[0][k]) if k < len(numbers[0]) else part
        for k, part in enumerate(_DIGITS.split(labels[0]))
    )


def collapse_siblings(
    tasks: list[Task], min_run: int = COLLAPSE_MIN_RUN
) -> list[Task | SiblingRun]:
    """Group runs of ``min_run`` or more consecutive tasks with equal :func:`label_pattern`."""
    out: list[Task | SiblingRun] = []
    i = 0
    while i < len(tasks):
        pattern = label_pattern(tasks[i].label)
        j = i + 1
        while j < len(tasks) and label_pattern(tasks[j].label) == pattern:
            j += 1
        if j - i >= min_run:
            out.append(SiblingRun(tasks[i:j]))
        else:
            out.extend(tasks[i:j])
        i = j
    return out


def render_collapsed(
    task: Task, label: Callable[[Task], str], max_depth: int | None = None
) -> Tree:
    """Like ``render_tree``, with runs of repeated siblings shown as one :class:`SiblingRun` line.

    Args:
        task: The root.
        label: Renders one task as rich markup (the CLI's label).
        max_depth: Levels shown below the root (``None``: all).
    """
    return build_tree(task, label, max_depth, collapse=True)


def build_tree(
    task: Task, label: Callable[[Task], str], max_depth: int | None = None, *, collapse: bool
) -> Tree:
    """Build a :class:`rich.tree.Tree` of ``task`` and its subtasks (iteratively: any depth).

    Args:
        task: The root.
        label: Renders one task as rich markup (the CLI's label).
        max_depth: Levels shown below the root (``None``: all); deeper subtasks are counted.
        collapse: Show runs of repeated siblings as one :class:`SiblingRun` line.
    """
    root = Tree(label(task))
    stack = [(task, root, 0)]
    while stack:
        node, branch, depth = stack.pop()
        if max_depth is not None and depth >= max_depth:
            if node.subtasks:
                count = len(node.subtasks)
                branch.add(f"[dim]… {count} subtask{'' if count == 1 else 's'}[/]")
            continue
        pending = []
        items = collapse_siblings(node.subtasks) if collapse else node.subtasks
        for item in items:
            if isinstance(item, SiblingRun):
                branch.add(f"[bold]{escape(item.title())}[/]")
            else:
                pending.append((item, branch.add(label(item))))
        stack.extend((child, sub, depth + 1) for child, sub in reversed(pending))
    return root


@contextmanager
def paused_gc() -> Iterator[None]:
    """Turn off the cyclic garbage collector for the block (restored after, even on error).

    Loading and rendering a 100,000-task tree allocate millions of objects, none in cycles
    worth collecting; each full collection walks the whole live tree, which made loading
    (``Task.model_validate_json``) about 2.5 times slower and rendering about 15 % slower.

    The objects made in the block all sit in the youngest generation, whose next collection
    (at the first allocation after the collector is back on) would walk every one of them
    (0.2 s for 100,000 tasks): they are moved to the oldest generation instead, unscanned
    (``gc.freeze()`` then ``gc.unfreeze()``), to be collected with it as usual. Not where the
    program froze objects itself (``gc.get_freeze_count()``): those stay frozen.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:  # none of the program's own: unfreeze moves all
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def count_tasks(task: Task, max_depth: int | None = None) -> int:
    """Count the tasks in ``task``'s tree, ``max_depth`` levels below it (``None``: all)."""
    if max_depth is None:  # the whole tree: no depth to carry (this visits every task)
        count = 1
        nodes = [task]
        while nodes:
            subtasks = nodes.pop().__dict__["subtasks"]
            if subtasks:
                count += len(subtasks)
                nodes.extend(subtasks)
        return count
    count = 0
    stack = [(task, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if max_depth is None or depth < max_depth:
            stack.extend((child, depth + 1) for child in node.subtasks)
    return count


def label_totals(task: Task) -> list[dict[str, Any]]:
    """Totals per label pattern over the whole tree, in order of first appearance.

    Each task counts with the measures its line shows
    (:func:`~tasktrace.core.carbon.usage_values`, :func:`~tasktrace.core.carbon.measure_values`'
    duration, CPU time and peak RSS): CPU time is its ``total_cpu()`` (a command's under
    ``tasktrace run``, a subprocess subtask's within its parent's) and peak RSS a command's own
    where recorded, not tasktrace's. Walks the tree once, iteratively (any depth).

    Returns:
        One dict per pattern: ``pattern``, ``tasks`` (count), ``total_duration_s``,
        ``total_cpu_time_s`` (sums of known, valid values, negative, NaN and infinite ones left
        out, in walk order; ``None`` when none is known), ``max_peak_memory_bytes`` and
        ``failed`` (count).
    """
    # Per pattern [tasks, total duration, total CPU, max peak RSS, failed]: a list, not the
    # row's dict, while summing (this loop runs for every task of a large tree).
    sums: dict[str, list[Any]] = {}
    failed = TaskStatus.FAILED
    pattern_of = _DIGITS.sub  # label_pattern, without a call per task
    stack = [task]
    while stack:
        node = stack.pop()
        d = node.__dict__  # the fields as stored
        pattern = pattern_of("#", d["label"])
        acc = sums.get(pattern)
        if acc is None:
            acc = sums[pattern] = [0, None, None, None, 0]
        acc[0] += 1
        duration, cpu, peak = usage_values(node)
        # A value that is no measurement (a corrupt file's negative or NaN: shown as —) counts
        # in no total: sums and maxima of known, valid values.
        if duration is not None and valid_measure(duration):
            acc[1] = (acc[1] or 0.0) + duration
        if cpu is not None and valid_measure(cpu):
            acc[2] = (acc[2] or 0.0) + cpu
        if peak is not None and valid_measure(peak):
            acc[3] = max(acc[3] or 0, round(peak))
        if d["status"] is failed:
            acc[4] += 1
        subtasks = d["subtasks"]
        if subtasks:
            stack.extend(reversed(subtasks))
    return [
        {
            "pattern": pattern,
            "tasks": tasks,
            "total_duration_s": duration_s,
            "total_cpu_time_s": cpu_s,
            "max_peak_memory_bytes": peak_bytes,
            "failed": failures,
        }
        for pattern, (tasks, duration_s, cpu_s, peak_bytes, failures) in sums.items()
    ]


def tree_html(task: Task) -> str:
    """Render the task tree as HTML with human units (inline styles), for ``_repr_html_``.

    The same lines as ``tasktrace show`` (emissions where the settings give the machine's
    carbon intensity); a tree of more than :data:`AUTO_COLLAPSE_TASKS` tasks has its repeated
    siblings collapsed. Rendered by rich's HTML export at :data:`UNWRAPPED_WIDTH`, so each task
    is one line of the ``<pre>`` whatever its length, never broken mid-phrase: the browser
    scrolls a line wider than the output area (``overflow-x: auto``).
    """
    label = functools.partial(task_line, carbon=CarbonIntensity.from_settings())
    tree = build_tree(task, label, collapse=count_tasks(task) > AUTO_COLLAPSE_TASKS)
    console = Console(
        record=True,
        file=io.StringIO(),
        width=UNWRAPPED_WIDTH,
        force_terminal=True,
        force_jupyter=False,
        color_system="truecolor",
    )
    console.print(tree)
    return console.export_html(
        inline_styles=True,
        code_format='<pre style="font-family: monospace; line-height: 1.3; overflow-x: auto; '
        'white-space: pre">{code}</pre>',
    )
