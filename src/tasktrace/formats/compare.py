"""Compare runs task by task: tasks matched by their path of labels.

A task's key is the labels on the path from the compared root's child down to it, each with
its occurrence among siblings of the same label (``("epoch 3", 1)``). The compared roots always
match one another: the files' roots, or, where their labels differ and one run holds a task
with the other's root label (a ``tasktrace run`` of a script against the script run directly),
that task and the other root (:func:`compared_roots`). Tasks whose key is missing from another
run are unmatched; only the top-most of an unmatched subtree is listed, with the count of tasks
below it. A matched task that did not finish in some run (running when its file was saved,
failed, cancelled) is not :attr:`~MatchedTask.complete`: its figures there cover part of its
work.

For each matched task and measure (duration, CPU time, peak RSS, energy and, with a carbon
intensity, emissions): the value in each run, the difference to the first run
(``value - first``) and the ratio (``value / first``; ``None`` when the first is 0 or unknown),
and for energy and emissions whether each run's figure is approximate (the flags of
:func:`~tasktrace.formats.measures.measure_values`: a task shorter than its energy source's
update period).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasktrace.core.record import TaskRecord as Task  # the record: these read fields only
from tasktrace.core.record import TaskStatus
from tasktrace.core.units import valid_measure
from tasktrace.formats.measures import (
    MEASURES,
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    Measure,
    measure_values,
)
from tasktrace.formats.rows import Run

__all__ = [
    "COMPARED",
    "Comparison",
    "MatchedTask",
    "UnmatchedTask",
    "compare_runs",
    "compared_roots",
]

COMPARED = ("duration", "cpu_time", "peak_memory", "energy", "emissions")
"""The measures compared (emissions only with a carbon intensity), by name in
:data:`~tasktrace.formats.measures.MEASURES`."""


@dataclass
class MatchedTask:
    """A task present in every run.

    Attributes:
        labels: Its path of labels from the first run's file root (through the task compared
            as the root, :attr:`Comparison.roots`).
        occurrence: Its position among earlier siblings with the same label (0: the first).
        values: Per measure column (``duration_s``, …), the value in each run (``None``: not
            measured in that run); only measures measured in some run are present.
        statuses: Its status in each run (``"running"`` in a file saved while it ran).
        short: Per measure column of :data:`~tasktrace.formats.measures.SHORT_TASK_FLAGS`
            present in ``values``, whether each run's value is approximate (its task shorter
            than its energy source's update period; ``False`` where not measured).
        names: Its label in each run (they differ only where roots of different labels are
            compared with one another).
        parent: The index of its parent in :attr:`Comparison.matched` (``None``: the root).
        depth: Levels below the compared roots.
    """

    labels: tuple[str, ...]
    occurrence: int
    values: dict[str, list[float | None]] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    short: dict[str, list[bool]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    parent: int | None = None
    depth: int = 0

    @property
    def complete(self) -> bool:
        """Whether the task finished in every run.

        ``False`` where a run's task was still running when its file was saved, failed or was
        cancelled: its figures cover only part of its work, so a difference or ratio against
        them is no like-for-like comparison.
        """
        return all(status == TaskStatus.FINISHED.value for status in self.statuses)

    @property
    def note(self) -> str | None:
        """Why no measure is compared, where none was measured in any run; else ``None``.

        ``"no measures yet: the task was still running when saved"`` where a run's file was
        saved before the task finished (a file written at the task's start holds no measure
        until its first refresh), ``"no measures yet: the task had not started when saved"``
        for a pending one, else ``"no measures in the files"``.
        """
        if self.values:
            return None
        if TaskStatus.RUNNING.value in self.statuses:
            return "no measures yet: the task was still running when saved"
        if TaskStatus.PENDING.value in self.statuses:
            return "no measures yet: the task had not started when saved"
        return "no measures in the files"

    def _pair(self, column: str, run: int) -> tuple[float, float] | None:
        first, other = self.values[column][0], self.values[column][run]
        if first is None or other is None or not valid_measure(first) or not valid_measure(other):
            return None  # unknown, or not a measurement (a corrupt file's negative or NaN)
        return first, other

    def difference(self, column: str, run: int) -> float | None:
        """``value in run - value in the first run`` (``None`` if either is unknown or invalid).

        Invalid: negative, NaN or infinite (:func:`~tasktrace.core.units.valid_measure`), as
        a corrupted file may hold; the views show such a value as ``—``.
        """
        pair = self._pair(column, run)
        return None if pair is None else pair[1] - pair[0]

    def ratio(self, column: str, run: int) -> float | None:
        """``value in run / value in the first run`` (``None`` if unknown, invalid, first 0)."""
        pair = self._pair(column, run)
        return None if pair is None or not pair[0] else pair[1] / pair[0]

    def approximate(self, column: str, run: int) -> bool:
        """Whether the figures of ``run`` against the first for ``column`` are approximate.

        ``True`` where either run's value is (:attr:`short`): a difference or ratio of an
        approximate figure is approximate too.
        """
        flags = self.short.get(column)
        return flags is not None and (flags[0] or flags[run])


@dataclass
class UnmatchedTask:
    """The top of a subtree of one run that is missing from another run.

    Attributes:
        labels: Its path of labels from its run's root.
        subtasks: How many tasks are below it (all unmatched too).
    """

    labels: tuple[str, ...]
    subtasks: int


@dataclass
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes:
        names: The runs' names, in the order given (the first is the reference).
        measures: The measures compared.
        matched: Tasks present in every run, in the first run's tree order.
        unmatched: Per run, the tops of its subtrees that some other run lacks.
        roots: Per run, the path of labels from its file's root to the task compared as the
            root (:func:`compared_roots`): the root itself, or the task below a ``tasktrace
            run`` command's root that has the other run's root label.
    """

    names: list[str]
    measures: list[Measure]
    matched: list[MatchedTask]
    unmatched: list[list[UnmatchedTask]]
    roots: list[tuple[str, ...]] = field(default_factory=list)

    def not_measured(self) -> list[dict[str, int]]:
        """Per run, the measure columns some matched task lacks there, with how many tasks.

        Only values another run has count (a measure no run has is not compared at all):
        ``[{}, {"energy_j": 3}]`` where the second run has no energy for three tasks the first
        has it for. In column order of :attr:`measures`.
        """
        out: list[dict[str, int]] = [{} for _ in self.names]
        for m in self.measures:
            for task in self.matched:
                for run, value in enumerate(task.values.get(m.column, ())):
                    if value is None:
                        out[run][m.column] = out[run].get(m.column, 0) + 1
        return out

    def approximate_tasks(self) -> int:
        """Count the matched tasks with an approximate value (:attr:`MatchedTask.short`)."""
        return sum(any(any(flags) for flags in task.short.values()) for task in self.matched)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict: runs, matched tasks, unmatched tasks per run.

        ``roots``: per run, the path to the task compared as its root. Each matched task has
        its label and status in each run (``labels``, ``statuses``), ``complete`` (finished in
        every run: :attr:`MatchedTask.complete`), per measure (units in the names), its values
        and the differences and ratios to the first run, one per run (``null`` where not measured),
        and for energy and emissions ``short_task``, one boolean per run: whether that run's
        value is approximate (:attr:`MatchedTask.short`); a task with no measure in any run has
        a ``note`` saying why (:attr:`MatchedTask.note`).
        """
        matched = []
        for task in self.matched:
            measures: dict[str, Any] = {}
            for m in self.measures:
                if m.column not in task.values:
                    continue
                entry: dict[str, Any] = {"values": task.values[m.column]}
                entry["difference"] = [task.difference(m.column, i) for i in range(len(self.names))]
                entry["ratio"] = [task.ratio(m.column, i) for i in range(len(self.names))]
                if m.column in task.short:
                    entry["short_task"] = task.short[m.column]
                measures[m.column] = entry
            entry = {
                "path": list(task.labels),
                "occurrence": task.occurrence,
                "labels": task.names,
                "statuses": task.statuses,
                "complete": task.complete,
                "measures": measures,
            }
            if task.note is not None:
                entry["note"] = task.note
            matched.append(entry)
        return {
            "runs": self.names,
            "roots": {name: list(path) for name, path in zip(self.names, self.roots, strict=True)},
            "matched": matched,
            "unmatched": {
                name: [{"path": list(u.labels), "subtasks": u.subtasks} for u in items]
                for name, items in zip(self.names, self.unmatched, strict=True)
            },
        }


def _find(root: Task, label: str) -> tuple[str, ...] | None:
    """Return the path of labels to the shallowest task labelled ``label`` below ``root``."""
    level: list[tuple[Task, tuple[str, ...]]] = [(root, (root.label,))]
    while level:
        below = []
        for node, path in level:
            for child in node.subtasks:
                child_path = (*path, child.label)
                if child.label == label:
                    return child_path
                below.append((child, child_path))
        level = below
    return None


def _at(root: Task, path: tuple[str, ...]) -> Task:
    """Return the first task along ``path`` (labels from ``root``'s own)."""
    node = root
    for label in path[1:]:
        node = next(child for child in node.subtasks if child.label == label)
    return node


def compared_roots(roots: Sequence[Task]) -> list[tuple[str, ...]]:
    """Per run, the path of labels from its file's root to the task compared as the root.

    The roots themselves where they share a label, or where no run wraps another's root. A
    root whose label another run's root lacks (``python train.py`` under ``tasktrace run``, the
    other run the script's own ``train`` root) is compared from the task with that label in the
    other runs (the shallowest, first in order), where every run has one: the first run's root
    label is tried first, then the next run's.
    """
    labels = [root.label for root in roots]
    whole: list[tuple[str, ...]] = [(root.label,) for root in roots]
    if len(set(labels)) == 1:
        return whole
    for label in dict.fromkeys(labels):
        paths = [(r.label,) if r.label == label else _find(r, label) for r in roots]
        if all(path is not None for path in paths):
            return [path for path in paths if path is not None]
    return whole


def _size(task: Task) -> int:
    count, stack = 0, list(task.subtasks)
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.subtasks)
    return count


def _children(node: Task) -> dict[tuple[str, int], Task]:
    """``node``'s subtasks by (label, occurrence among same-labelled siblings), in order."""
    seen: dict[str, int] = {}
    out = {}
    for child in node.subtasks:
        n = seen.get(child.label, 0)
        seen[child.label] = n + 1
        out[child.label, n] = child
    return out


def _matched(
    nodes: list[Task],
    labels: tuple[str, ...],
    occurrence: int,
    columns: Sequence[str],
    carbon: CarbonIntensity | None,
) -> MatchedTask:
    per_run = [measure_values(node, carbon) for node in nodes]
    task = MatchedTask(labels, occurrence)
    task.names = [node.label for node in nodes]
    task.statuses = [node.status.value for node in nodes]
    for column in columns:
        values = [v.get(column) for v in per_run]
        if any(v is not None for v in values):
            task.values[column] = values
            flag = SHORT_TASK_FLAGS.get(column)
            if flag is not None:  # the flag measure_values carries with the figure
                task.short[column] = [v.get(flag) is True for v in per_run]
    return task


def compare_runs(runs: Sequence[Run], carbon: CarbonIntensity | None = None) -> Comparison:
    """Match the tasks of ``runs`` by path of labels and compare their measures.

    The trees are walked together from the compared roots (:func:`compared_roots`), once:
    time and memory in proportion to the tasks (a matched task's path is its parent's plus
    its label).

    Args:
        runs: Two or more runs; the first is the reference for differences and ratios.
        carbon: Carbon intensities; emissions are compared only when it knows one.

    Raises:
        ValueError: Fewer than two runs.
    """
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    measures = [MEASURES[n] for n in COMPARED if n != "emissions" or carbon]
    columns = [m.column for m in measures]
    roots = compared_roots([run.task for run in runs])
    tops = [_at(run.task, path) for run, path in zip(runs, roots, strict=True)]
    matched: list[MatchedTask] = []
    unmatched: list[list[UnmatchedTask]] = [[] for _ in runs]
    stack: list[tuple[list[Task], tuple[str, ...], int, int | None, int]] = [
        (tops, roots[0], 0, None, 0)
    ]
    while stack:
        nodes, labels, occurrence, parent, depth = stack.pop()
        task = _matched(nodes, labels, occurrence, columns, carbon)
        task.parent, task.depth = parent, depth
        index = len(matched)
        matched.append(task)
        children = [_children(node) for node in nodes]
        for run, mine in enumerate(children):
            for key, child in mine.items():
                if not all(key in other for other in children):
                    path = (*roots[run], *labels[len(roots[0]) :], child.label)
                    unmatched[run].append(UnmatchedTask(path, _size(child)))
        below = [
            ([other[key] for other in children], (*labels, key[0]), key[1], index, depth + 1)
            for key in children[0]
            if all(key in other for other in children[1:])
        ]
        stack.extend(reversed(below))
    return Comparison([run.name for run in runs], measures, matched, unmatched, roots)
