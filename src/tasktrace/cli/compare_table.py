"""``tasktrace compare``'s text: the table of matched tasks, its notes, the unmatched tasks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasktrace.cli.meters_note import print_note, show_note
from tasktrace.core.lines import APPROXIMATE, NOT_MEASURED
from tasktrace.core.units import friendly_ratio
from tasktrace.core.views import (
    AUTO_COLLAPSE_TASKS,
    COLLAPSE_MIN_RUN,
    label_pattern,
    printable,
    run_name,
)
from tasktrace.formats.compare import Comparison, UnmatchedTask
from tasktrace.formats.compare_fold import CompareRow, compare_rows
from tasktrace.formats.energy_note import MISSING_REASONS, short_task_note
from tasktrace.formats.measures import MEASURES, SHORT_TASK_FLAGS
from tasktrace.formats.rows import PATH_SEPARATOR, Run

__all__ = ["print_comparison"]

_MEASURE_BY_COLUMN = {m.column: m for m in MEASURES.values()}
UNFINISHED_NOTE = (
    "(running), (failed), (cancelled) after a figure: that run's task had not finished (still "
    "running when its file was saved, or ended by an error or a signal), so its figures cover "
    "only part of its work: a difference or ratio against them is no like-for-like comparison"
)
"""The note under the table where a figure is marked with its task's unfinished status."""


def _status(counts: Counter[str], count: int) -> str:
    """`` (running)`` for one task; `` (3 of 20 running)`` for a folded row; ``""`` if finished."""
    if not counts:
        return ""
    if count == 1:
        return f" ({next(iter(counts))})"
    return " (" + ", ".join(f"{n:,} of {count:,} {s}" for s, n in counts.most_common()) + ")"


def _figures(row: CompareRow, column: str) -> list[str]:
    """Return the cells of one row's measure: each run's value, the difference and the ratio.

    ``≈`` before an approximate figure (and the difference and ratio of one), ``—`` for a value
    not measured (and the difference and ratio it leaves unknown); a ratio to a first figure of
    0 is left empty. A value of a task that did not finish is followed by its status.
    """
    task = row.task
    measure = _MEASURE_BY_COLUMN[column]
    values = task.values[column]
    flags = task.short.get(column, [False] * len(values))
    cells = [
        measure.cell(v, f) + (_status(row.unfinished[run], row.count) if v is not None else "")
        for run, (v, f) in enumerate(zip(values, flags, strict=True))
    ]
    rough = task.approximate(column, 1)
    cells.append(measure.signed_cell(task.difference(column, 1), rough))
    ratio = task.ratio(column, 1)
    if ratio is not None:
        cells.append((APPROXIMATE if rough else "") + friendly_ratio(ratio))
    else:
        cells.append(NOT_MEASURED if None in values else "")
    return cells


def _notes(result: Comparison, runs: Sequence[Run], rows: Sequence[CompareRow]) -> list[str]:
    """Say what the marks in the table stand for, once each, and why a run lacks a measure.

    Why: the run's energy note (:func:`~tasktrace.cli.meters_note.show_note`: the meters its
    file records, or what each missing energy needs) for energy and emissions, else what the
    measure needs (:data:`~tasktrace.formats.energy_note.MISSING_REASONS`). Where a run was
    compared from a task below its file's root, which one.
    """
    lines = []
    for name, path in zip(result.names, result.roots, strict=True):
        if len(path) > 1:
            lines.append(
                f"{printable(name)}: compared from its task {printable(PATH_SEPARATOR.join(path))}"
                " (the other run's root label)"
            )
    if any(any(counts) for row in rows for counts in row.unfinished):
        lines.append(UNFINISHED_NOTE)
    short = result.approximate_tasks()
    if short:
        lines.append(short_task_note(short))
    for run, missing in zip(runs, result.not_measured(), strict=True):
        if not missing:
            continue
        counts = ", ".join(
            f"{_MEASURE_BY_COLUMN[c].title} ({n:,} task{'s' if n != 1 else ''})"
            for c, n in missing.items()
        )
        lines.append(f"{NOT_MEASURED}: not measured in {printable(run.name)}: {counts}")
        energy = False
        for column in missing:
            if column in SHORT_TASK_FLAGS and column != "emissions_g":
                energy = True
            elif column != "emissions_g" or "energy_j" not in missing:
                lines.append(f"  {_MEASURE_BY_COLUMN[column].title} {MISSING_REASONS[column]}")
        if energy:
            lines.extend(f"  {line}" for line in show_note(run.task))
    return lines


def _table(result: Comparison, rows: Sequence[CompareRow]) -> Table:
    a, b = result.names
    table = Table(
        "task",
        "measure",
        escape(a),
        escape(b),
        "difference",
        "ratio",
        title=f"{escape(b)} compared with {escape(a)}",
    )
    for row in rows:
        name = escape("  " * row.depth + printable(row.title))
        first = True
        for column in row.task.values:
            table.add_row(
                name if first else "",
                _MEASURE_BY_COLUMN[column].title,
                *_figures(row, column),
                end_section=False,
            )
            first = False
        if row.task.note is not None:  # no measure in any run: say why, not an empty row
            table.add_row(name, f"[dim]({row.task.note})[/]", "", "", "", "")
    return table


def print_comparison(
    console: Console, result: Comparison, runs: Sequence[Run], *, fold: bool | None = None
) -> None:
    """Print ``result`` (two runs): the table, its notes, then each run's unmatched tasks.

    Args:
        console: Where to print.
        result: The comparison of ``runs``.
        runs: The two runs compared (their energy notes, where a measure is missing).
        fold: Fold repeated siblings (:func:`~tasktrace.formats.compare_fold.compare_rows`),
            and runs of repeated unmatched siblings into one line; ``None``: above
            :data:`~tasktrace.core.views.AUTO_COLLAPSE_TASKS` matched tasks (unmatched tasks,
            counting their subtasks, for the unmatched lines).
    """
    rows = compare_rows(result, fold)
    console.print(_table(result, rows))
    if len(rows) < len(result.matched):
        console.print(
            f"[dim]({len(result.matched):,} matched tasks: repeated siblings folded; --all for a "
            "row per task, --json for every task)[/]"
        )
    print_note(console, _notes(result, runs, rows))
    for name, items in zip(result.names, result.unmatched, strict=True):
        if not items:
            continue
        console.print(f"[bold]Only in {escape(printable(name))}[/] ({len(items):,} unmatched):")
        tasks = len(items) + sum(item.subtasks for item in items)
        for group in _unmatched_runs(items, tasks > AUTO_COLLAPSE_TASKS if fold is None else fold):
            labels = group[0].labels
            if len(group) > 1:
                labels = (*labels[:-1], run_name([item.labels[-1] for item in group]))
            count = f"{len(group):,} tasks, " if len(group) > 1 else ""
            below = sum(item.subtasks for item in group)
            note = (
                f" ({count}+{below:,} subtasks)"
                if below
                else (f" ({len(group):,} tasks)" if count else "")
            )
            console.print(f"  {escape(printable(PATH_SEPARATOR.join(labels)))}{note}")


def _unmatched_runs(items: Sequence[UnmatchedTask], fold: bool) -> list[list[UnmatchedTask]]:
    """Group consecutive unmatched siblings whose labels share a pattern (when ``fold``)."""
    out: list[list[UnmatchedTask]] = []
    for item in items:
        last = out[-1] if out else None
        if (
            fold
            and last is not None
            and last[0].labels[:-1] == item.labels[:-1]
            and label_pattern(last[0].labels[-1]) == label_pattern(item.labels[-1])
        ):
            last.append(item)
        else:
            out.append([item])
    folded: list[list[UnmatchedTask]] = []
    for group in out:  # a run shorter than the minimum stays one line per task
        folded.extend([group] if len(group) >= COLLAPSE_MIN_RUN else [[item] for item in group])
    return folded
