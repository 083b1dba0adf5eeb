"""Compare runs task by task: tasks matched by their path of labels.

A task's key is the labels on the path from the root's child down to it, each with its
occurrence among siblings of the same label (``("epoch 3", 1)``); the roots always match one
another, whatever their labels. Tasks whose key is missing from another run are unmatched; only
the top-most of an unmatched subtree is listed, with the count of tasks below it.

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
from tasktrace.formats.measures import (
    MEASURES,
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    Measure,
    measure_values,
)
from tasktrace.formats.rows import Run

__all__ = ["COMPARED", "Comparison", "MatchedTask", "UnmatchedTask", "compare_runs"]

COMPARED = ("duration", "cpu_time", "peak_memory", "energy", "emissions")
"""The measures compared (emissions only with a carbon intensity), by name in
:data:`~tasktrace.formats.measures.MEASURES`."""

_Key = tuple[tuple[str, int], ...]


@dataclass
class MatchedTask:
    """A task present in every run.

    Attributes:
        labels: Its path of labels from the root (the first run's root label first).
        occurrence: Its position among earlier siblings with the same label (0: the first).
        values: Per measure column (``duration_s``, …), the value in each run (``None``: not
            measured in that run); only measures measured in some run are present.
        statuses: Its status in each run (``"running"`` in a file saved while it ran).
        short: Per measure column of :data:`~tasktrace.formats.measures.SHORT_TASK_FLAGS`
            present in ``values``, whether each run's value is approximate (its task shorter
            than its energy source's update period; ``False`` where not measured).
    """

    labels: tuple[str, ...]
    occurrence: int
    values: dict[str, list[float | None]] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    short: dict[str, list[bool]] = field(default_factory=dict)

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

    def difference(self, column: str, run: int) -> float | None:
        """``value in run - value in the first run`` (``None`` if either is unknown)."""
        first, other = self.values[column][0], self.values[column][run]
        return None if first is None or other is None else other - first

    def ratio(self, column: str, run: int) -> float | None:
        """``value in run / value in the first run`` (``None`` if unknown or the first is 0)."""
        first, other = self.values[column][0], self.values[column][run]
        return None if not first or other is None else other / first

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
    """

    names: list[str]
    measures: list[Measure]
    matched: list[MatchedTask]
    unmatched: list[list[UnmatchedTask]]

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

        Each matched task has, per measure (units in the names), its values and the
        differences and ratios to the first run, one per run (``null`` where not measured),
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
            entry = {"path": list(task.labels), "occurrence": task.occurrence, "measures": measures}
            if task.note is not None:
                entry["note"] = task.note
            matched.append(entry)
        return {
            "runs": self.names,
            "matched": matched,
            "unmatched": {
                name: [{"path": list(u.labels), "subtasks": u.subtasks} for u in items]
                for name, items in zip(self.names, self.unmatched, strict=True)
            },
        }


def _index(root: Task) -> dict[_Key, tuple[Task, tuple[str, ...]]]:
    """Every task of the tree by key, in pre-order (dicts keep insertion order)."""
    out: dict[_Key, tuple[Task, tuple[str, ...]]] = {}
    stack: list[tuple[Task, _Key, tuple[str, ...]]] = [(root, (), (root.label,))]
    while stack:
        node, key, labels = stack.pop()
        out[key] = (node, labels)
        seen: dict[str, int] = {}
        children = []
        for child in node.subtasks:
            n = seen.get(child.label, 0)
            seen[child.label] = n + 1
            children.append((child, (*key, (child.label, n)), (*labels, child.label)))
        stack.extend(reversed(children))
    return out


def _size(task: Task) -> int:
    count, stack = 0, list(task.subtasks)
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.subtasks)
    return count


def compare_runs(runs: Sequence[Run], carbon: CarbonIntensity | None = None) -> Comparison:
    """Match the tasks of ``runs`` by path of labels and compare their measures.

    Args:
        runs: Two or more runs; the first is the reference for differences and ratios.
        carbon: Carbon intensities; emissions are compared only when it knows one.

    Raises:
        ValueError: Fewer than two runs.
    """
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    measures = [MEASURES[n] for n in COMPARED if n != "emissions" or carbon]
    indexes = [_index(run.task) for run in runs]
    matched = []
    for key, (_, labels) in indexes[0].items():
        if not all(key in index for index in indexes[1:]):
            continue
        nodes = [index[key][0] for index in indexes]
        per_run = [measure_values(node, carbon) for node in nodes]
        task = MatchedTask(labels, key[-1][1] if key else 0)
        task.statuses = [node.status.value for node in nodes]
        for m in measures:
            values = [v.get(m.column) for v in per_run]
            if any(v is not None for v in values):
                task.values[m.column] = values
                flag = SHORT_TASK_FLAGS.get(m.column)
                if flag is not None:  # the flag measure_values carries with the figure
                    task.short[m.column] = [v.get(flag) is True for v in per_run]
        matched.append(task)
    unmatched = []
    for i, index in enumerate(indexes):
        others = [other for j, other in enumerate(indexes) if j != i]
        tops = [
            UnmatchedTask(labels, _size(node))
            for key, (node, labels) in index.items()
            if not all(key in o for o in others) and all(key[:-1] in o for o in others)
        ]
        unmatched.append(tops)
    return Comparison([run.name for run in runs], measures, matched, unmatched)
