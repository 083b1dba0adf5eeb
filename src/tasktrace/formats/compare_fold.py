"""The rows of ``tasktrace compare``'s table, with repeated siblings folded in large comparisons.

Above :data:`tasktrace.core.views.AUTO_COLLAPSE_TASKS` matched tasks (the threshold of
``tasktrace show`` and the report), runs of :data:`~tasktrace.core.views.COLLAPSE_MIN_RUN` or
more consecutive matched siblings whose labels share a pattern (``batch 0`` … ``batch 999``)
become one row, as ``show`` and the report fold them (:mod:`tasktrace.formats.fold`); the
subtasks of a folded row are merged by label pattern into folded rows in turn. A folded row's
figures are, per run, the sums over its tasks (the largest value for peaks), so a row still
compares like with like. ``compare --json`` always lists every matched task.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tasktrace.core.record import TaskStatus
from tasktrace.core.views import AUTO_COLLAPSE_TASKS, COLLAPSE_MIN_RUN, label_pattern, run_name
from tasktrace.formats.compare import Comparison, MatchedTask
from tasktrace.formats.measures import MEASURES

__all__ = ["CompareRow", "compare_rows"]

_PEAKS = {m.column for m in MEASURES.values() if m.peak}
_FINISHED = TaskStatus.FINISHED.value


@dataclass
class CompareRow:
    """One row of the table: a matched task, or repeated matched siblings folded into one.

    Attributes:
        task: The figures: the task's own, or for a folded row a :class:`MatchedTask` holding
            per run the sums over its tasks (the largest value for peaks; ``None`` where no
            task has one) and whether any of them is approximate.
        title: The task's label (``"epoch 3 [2]"`` for a second same-labelled sibling; each
            run's label where they differ), or the folded labels in one (``"batch 0…999"``).
        depth: Levels below the compared roots.
        count: How many matched tasks the row stands for.
        unfinished: Per run, how many of its tasks did not finish, by status (``running``,
            ``failed``, ``cancelled``, ``pending``); empty where all finished.
    """

    task: MatchedTask
    title: str
    depth: int
    count: int = 1
    unfinished: list[Counter[str]] = field(default_factory=list)


def _title(task: MatchedTask, names: list[str]) -> str:
    title = task.labels[-1]
    if task.occurrence:
        title += f" [{task.occurrence + 1}]"
    others = [
        f"{name}: {label}"
        for name, label in zip(names[1:], task.names[1:], strict=True)
        if label != task.names[0]
    ]
    return f"{title} ({'; '.join(others)})" if others else title


def _row(group: list[MatchedTask], names: list[str], depth: int) -> CompareRow:
    runs = len(names)
    unfinished: list[Counter[str]] = [Counter() for _ in range(runs)]
    for task in group:
        for run, status in enumerate(task.statuses):
            if status != _FINISHED:
                unfinished[run][status] += 1
    if len(group) == 1:
        return CompareRow(group[0], _title(group[0], names), depth, 1, unfinished)
    first = group[0]
    sums = MatchedTask(first.labels, first.occurrence, depth=depth)
    sums.names = [run_name([t.names[run] for t in group]) for run in range(runs)]
    sums.statuses = [
        _FINISHED if not counts else counts.most_common(1)[0][0] for counts in unfinished
    ]
    none: list[float | None] = [None] * runs
    for column in dict.fromkeys(c for t in group for c in t.values):
        values: list[float | None] = []
        for run in range(runs):
            known = [v for t in group if (v := t.values.get(column, none)[run]) is not None]
            values.append((max(known) if column in _PEAKS else sum(known)) if known else None)
        sums.values[column] = values
        if any(column in t.short for t in group):
            sums.short[column] = [
                any(t.short.get(column, [False] * runs)[run] for t in group) for run in range(runs)
            ]
    title = f"{run_name([t.labels[-1] for t in group])} ({len(group):,} tasks)"
    return CompareRow(sums, title, depth, len(group), unfinished)


def _runs(indexes: list[int], matched: list[MatchedTask]) -> list[list[int]]:
    """Group consecutive siblings whose labels share a pattern, in runs of at least the minimum."""
    out: list[list[int]] = []
    i = 0
    while i < len(indexes):
        pattern = label_pattern(matched[indexes[i]].labels[-1])
        j = i + 1
        while j < len(indexes) and label_pattern(matched[indexes[j]].labels[-1]) == pattern:
            j += 1
        if j - i >= COLLAPSE_MIN_RUN:
            out.append(indexes[i:j])
        else:
            out.extend([k] for k in indexes[i:j])
        i = j
    return out


def compare_rows(result: Comparison, fold: bool | None = None) -> list[CompareRow]:
    """Return the table's rows in tree order (iteratively: any depth).

    Args:
        result: The comparison.
        fold: Fold repeated siblings; ``None`` (default): where more than
            :data:`~tasktrace.core.views.AUTO_COLLAPSE_TASKS` tasks matched.
    """
    matched = result.matched
    if not matched:
        return []
    if fold is None:
        fold = len(matched) > AUTO_COLLAPSE_TASKS
    children: list[list[int]] = [[] for _ in matched]
    for i, task in enumerate(matched):
        if task.parent is not None:
            children[task.parent].append(i)
    rows: list[CompareRow] = []
    stack: list[tuple[list[int], int]] = [([0], 0)]
    while stack:
        group, depth = stack.pop()
        rows.append(_row([matched[i] for i in group], result.names, depth))
        if len(group) == 1:
            below = children[group[0]]
            groups = _runs(below, matched) if fold else [[k] for k in below]
        else:  # the folded tasks' subtasks, merged by label pattern
            by_pattern: dict[str, list[int]] = {}
            for i in group:
                for k in children[i]:
                    by_pattern.setdefault(label_pattern(matched[k].labels[-1]), []).append(k)
            groups = list(by_pattern.values())
        stack.extend((g, depth + 1) for g in reversed(groups))
    return rows
