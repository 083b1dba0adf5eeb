"""Task files as runs and rows, the data behind ``report``, ``compare`` and ``table``.

- :func:`load_task_file` reads a task file (tasktrace's or LensKit's) or OTLP JSON lines.
- :func:`load_runs` reads several, each a :class:`Run` named by its file or by the caller.
- :func:`task_rows` flattens runs into one row (a ``dict``) per task: run, path of labels,
  depth, parent, every field with the measures in SI units (see
  :mod:`tasktrace.formats.measures`), and extra data flattened into columns.
- :func:`group_rows` sums or takes the peak of measures per group (``--by label``).

:func:`tasktrace.read_tasks` makes a DataFrame of the rows. This module is pure Python: pandas
is needed only to make a DataFrame or to write CSV/Parquet/LaTeX.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasktrace.core.record import TaskRecord, TaskStatus
from tasktrace.core.views import label_pattern
from tasktrace.formats.input_errors import describe_input_error, is_chrome_trace
from tasktrace.formats.measures import (
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    Measure,
    measure_values,
)
from tasktrace.formats.replay import is_otlp_json, load_task, parse_task_file
from tasktrace.task import Task

__all__ = [
    "OVERLAP_SCOPES",
    "PATH_SEPARATOR",
    "Run",
    "TaskFileError",
    "TaskRows",
    "count_overlapping",
    "describe_input_error",
    "group_rows",
    "load_runs",
    "load_task_file",
    "run_names",
    "task_rows",
]

PATH_SEPARATOR = " / "
"""Joins the labels of a task's path in the ``path`` column (``"experiment / epoch 3"``)."""

_RENAMED = {  # seed field -> column with its unit (the seed's *_power fields hold joules)
    "start_time": "start_time_s",
    "finish_time": "finish_time_s",
    "duration": "duration_s",
    "cpu_time": "cpu_time_s",
    "peak_memory": "peak_memory_bytes",
    "peak_gpu_memory": "peak_gpu_memory_bytes",
    "system_power": "system_energy_j",
    "cpu_power": "cpu_energy_j",
    "gpu_power": "gpu_energy_j",
}
_NAMES = [name for name in TaskRecord.model_fields if name != "subtasks"]
_COLUMNS = [_RENAMED.get(name, name) for name in _NAMES]
_VALUES = operator.itemgetter(*_NAMES)  # every field value from a task's __dict__, in C


OVERLAP_SCOPES = {
    "cpu_time_s": "process",
    "energy_j": "machine",
    "cpu_energy_j": "machine",
    "gpu_energy_j": "machine",
    "system_energy_j": "machine",
    "dram_energy_j": "machine",
    "emissions_g": "machine",
}
"""The measures a task shares with every task that ran at the same time in its scope.

A task's CPU time is its whole process's over its span (``getrusage(RUSAGE_SELF)``: every
thread), and its energy the machine's (RAPL packages, the visible GPUs, a Prometheus query): two
tasks that overlap in time in one process (threads) each hold the CPU both used, and two that
overlap on one machine (threads or processes) each hold the energy both used. A group's total
of such tasks counts the shared part once per task (:func:`group_rows` says how many)."""


class TaskFileError(ValueError):
    """A task file cannot be read or is not valid; the message names the file (one line)."""


def load_task_file(path: Path) -> Task:
    """Load a task file (tasktrace's or LensKit's), an OTLP JSON-lines file or a folder of them.

    Raises:
        OSError: The file cannot be read.
        pydantic.ValidationError: It is not a valid task file.
        ValueError: It is OTLP JSON that cannot be decoded; a folder holds no OTLP JSON file.
        RecursionError: The tree is nested too deeply to read.
    """
    if path.is_dir():  # one process's file each: read together (formats.replay)
        return load_task(path)
    data = path.read_bytes()
    # is_otlp_json parses the first line, i.e. all of a one-line task file (0.5 s for 36 MB):
    # look for the key first (a substring search, ~10 ms).
    if b"resourceSpans" in data and is_otlp_json(data):
        return load_task(path, data)
    return parse_task_file(data)


@dataclass
class Run:
    """One task file, loaded.

    Attributes:
        name: The run's name: the file name without ``.json``, or the caller's.
        path: The file it was read from.
        task: The root task of the file.
    """

    name: str
    path: Path
    task: Task


def run_names(paths: Sequence[Path], names: Sequence[str] | None = None) -> list[str]:
    """Name each path: ``names`` if given, else the file name less ``.json``.

    Names that would repeat (``a/run.json`` and ``b/run.json``) are the paths as given.

    Raises:
        ValueError: ``names`` has another length than ``paths``, or repeats a name.
    """
    if names is not None:
        if len(names) != len(paths):
            given = f"{len(names)} name{'' if len(names) == 1 else 's'} given"
            files = f"{len(paths)} file{'' if len(paths) == 1 else 's'}"
            raise ValueError(f"{given} for {files}")
        if len(set(names)) != len(names):
            raise ValueError(f"run names must differ: {list(names)}")
        return list(names)
    stems = [p.name.removesuffix(".json") for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]


def load_runs(
    paths: Sequence[Path],
    names: Sequence[str] | None = None,
    skipped: list[str] | None = None,
) -> list[Run]:
    """Load each path as a :class:`Run`.

    Args:
        paths: Task files, OTLP JSON-lines files or folders of them.
        names: The runs' names (default: the file names, see :func:`run_names`).
        skipped: Where given, and ``paths`` are more than one, a Chrome trace among them (as
            ``tasktrace export --format chrome`` writes: ``runs/*.json`` picks it up beside
            the runs) is left out and one line saying so is appended here, instead of failing.

    Raises:
        TaskFileError: A file cannot be read or is not a task file (the message names it).
        ValueError: ``names`` does not fit ``paths`` (see :func:`run_names`).
    """
    runs = []
    for path, name in zip(paths, run_names(paths, names), strict=True):
        try:
            task = load_task_file(path)
        except (OSError, RecursionError, ValidationError, ValueError, TypeError) as e:
            if skipped is not None and len(paths) > 1 and is_chrome_trace(e):
                skipped.append(f"{path}: skipped: a Chrome trace, not a task file")
                continue
            raise TaskFileError(describe_input_error(path, e)) from e
        runs.append(Run(name, path, task))
    return runs


def walk(task: TaskRecord) -> Iterator[tuple[TaskRecord, tuple[str, ...], int | None]]:
    """Yield ``(task, labels from the root, index of the parent in this walk)`` in pre-order."""
    stack: list[tuple[TaskRecord, tuple[str, ...], int | None]] = [(task, (task.label,), None)]
    index = 0
    while stack:
        node, labels, parent = stack.pop()
        yield node, labels, parent
        stack.extend((c, (*labels, c.label), index) for c in reversed(node.subtasks))
        index += 1


def _flatten(data: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, f"{name}.", out)
        else:
            out[name] = value


@dataclass
class TaskRows:
    """One row per task of one or more runs, in pre-order per run.

    Attributes:
        rows: The rows (see :func:`task_rows` for the columns).
        parents: For each row, the index in ``rows`` of its parent's row (``None``: a root).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    parents: list[int | None] = field(default_factory=list)


def task_rows(runs: Sequence[Run], carbon: CarbonIntensity | None = None) -> TaskRows:
    """Flatten ``runs`` into one row per task.

    Columns: ``run``, ``file``, ``path`` (labels from the root joined by
    :data:`PATH_SEPARATOR`), ``depth`` (0 for the root), ``label_pattern`` (digits as ``#``),
    every task field (``task_id``, ``parent_id`` and ``status`` as text; the seed's measure
    fields renamed with their units: ``duration_s``, ``cpu_time_s``, ``peak_memory_bytes``,
    ``peak_gpu_memory_bytes``, ``cpu_energy_j``, ``gpu_energy_j``, ``system_energy_j``;
    ``start_time_s`` / ``finish_time_s`` in UNIX seconds; the measures are those of
    :func:`~tasktrace.formats.measures.measure_values`, as ``tasktrace show`` prints them:
    ``cpu_time_s`` with other processes' CPU below the task, a command's own peak RSS),
    ``energy_j`` (see
    :func:`~tasktrace.formats.measures.total_energy_j`), ``emissions_g`` when ``carbon`` knows
    any intensity, the flags of :data:`~tasktrace.formats.measures.SHORT_TASK_FLAGS`
    (``energy_short_task``, ``dram_energy_short_task``, ``emissions_short_task`` beside the
    CPU, GPU and system ones: ``True`` where that figure is approximate), then the extra data
    (``tags``, ``epoch``, …; nested mappings flattened as ``key.sub``; a key that repeats a
    column's name gets the prefix ``extra.``).
    """
    out = TaskRows()
    for run in runs:
        base = len(out.rows)
        for node, labels, parent in walk(run.task):
            row: dict[str, Any] = {
                "run": run.name,
                "file": str(run.path),
                "path": PATH_SEPARATOR.join(labels),
                "depth": len(labels) - 1,
                "label_pattern": label_pattern(node.label),
            }
            row.update(zip(_COLUMNS, _VALUES(node.__dict__), strict=True))  # pydantic's fields
            row["task_id"] = str(node.task_id)
            row["parent_id"] = None if node.parent_id is None else str(node.parent_id)
            row["status"] = node.status.value
            row.update(measure_values(node, carbon))  # the measures as show prints them
            if node.__pydantic_extra__:
                extra: dict[str, Any] = {}
                _flatten(node.__pydantic_extra__, "", extra)
                for key, value in extra.items():
                    row[f"extra.{key}" if key in row else key] = value
            out.rows.append(row)
            out.parents.append(None if parent is None else base + parent)
    return out


def _key(row: Mapping[str, Any], by: Sequence[str]) -> tuple[Any, ...] | None:
    values = []
    for column in by:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        values.append(tuple(value) if isinstance(value, list) else value)
    try:
        hash(tuple(values))
    except TypeError:
        return None
    return tuple(values)


def group_rows(
    table: TaskRows, by: Sequence[str], measures: Sequence[Measure]
) -> list[dict[str, Any]]:
    """Aggregate ``measures`` per group of rows with equal values in the ``by`` columns.

    Rows without a value in a ``by`` column are left out. A list value (``tags``) groups the
    tasks with the same list, shown as its items joined by ``", "`` (``train, eval``). A task
    inside another task of the same group is left out too: its cost is already part of its
    ancestor's, and adding it would count it twice (``--by run`` gives each run's root alone).

    Returns:
        One dict per group, in order of first appearance: the ``by`` columns, ``tasks`` (the
        count), ``failed`` (how many failed), and for each measure ``<column>_total`` (sum of
        the known values; ``_max`` for a peak) and ``<column>_mean`` (mean of the known values),
        ``None`` where no value is known; for energy and emissions also
        ``<column>_short_tasks``: how many of those values are approximate (their task shorter
        than its energy source's update period: the row's flag of
        :data:`~tasktrace.formats.measures.SHORT_TASK_FLAGS`), ``0`` where none is; for CPU
        time, energy and emissions ``<column>_overlapping_tasks``: how many of the group's
        tasks with a value ran at the same time as another of them in one process (CPU time)
        or on one machine (energy, emissions), so that the total counts what they shared once
        per task (:data:`OVERLAP_SCOPES`); ``0`` where none did. The mean of such tasks is
        each one's process's or machine's, not the task's own.

    Raises:
        ValueError: No row has one of the ``by`` columns (the message names it).
    """
    rows, parents = table.rows, table.parents
    process = list(range(len(rows)))  # the row of the top task of each row's process
    for i, parent in enumerate(parents):
        if parent is not None and not rows[i].get("subprocess"):
            process[i] = process[parent]
    for column in by:
        if not any(column in row for row in rows):
            raise ValueError(f"no task has a column {column!r} to group by")
    keys = [_key(row, by) for row in rows]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        if key is None:
            continue
        parent = parents[i]
        while parent is not None and keys[parent] != key:
            parent = parents[parent]
        if parent is None:  # no ancestor in the same group
            groups.setdefault(key, []).append(i)
    out = []
    for key, members in groups.items():
        group: dict[str, Any] = {  # a list (tags) as its items: "train, eval", not a tuple
            column: ", ".join(map(str, value)) if isinstance(value, tuple) else value
            for column, value in zip(by, key, strict=True)
        }
        group["tasks"] = len(members)
        group["failed"] = sum(rows[m]["status"] == TaskStatus.FAILED.value for m in members)
        for measure in measures:
            scope = OVERLAP_SCOPES.get(measure.column)
            if scope is not None:
                group[f"{measure.column}_overlapping_tasks"] = _overlapping(
                    rows, members, measure.column, process if scope == "process" else None
                )
            known = [v for m in members if (v := rows[m].get(measure.column)) is not None]
            total = (max(known) if measure.peak else math.fsum(known)) if known else None
            group[f"{measure.column}_{measure.aggregate}"] = total
            group[f"{measure.column}_mean"] = math.fsum(known) / len(known) if known else None
            flag = SHORT_TASK_FLAGS.get(measure.column)
            if flag is not None:
                group[f"{measure.column}_short_tasks"] = sum(
                    rows[m].get(flag) is True
                    for m in members
                    if rows[m].get(measure.column) is not None
                )
        out.append(group)
    return out


def _overlapping(
    rows: Sequence[Mapping[str, Any]],
    members: Sequence[int],
    column: str,
    process: list[int] | None,
) -> int:
    """Count the ``members`` with a ``column`` value whose span overlaps another's in its scope.

    The scope: the same process (``process``: each row's process, by its top row) or, where
    ``process`` is ``None``, the same run and host. A row without a start is left out.
    """
    spans = []
    for m in members:
        row = rows[m]
        start = row.get("start_time_s")
        if row.get(column) is None or start is None:
            continue
        finish = row.get("finish_time_s")
        if finish is None:
            finish = start + (row.get("duration_s") or 0.0)
        scope = (process[m],) if process is not None else (row.get("run"), row.get("hostname"))
        spans.append((scope, start, finish))
    return count_overlapping(spans)


def count_overlapping(spans: Iterable[tuple[Hashable, float, float]]) -> int:
    """Count the spans that overlap another span of the same scope in time.

    Args:
        spans: ``(scope, start, finish)`` per task: a hashable scope (a process, a machine) and
            UNIX seconds (a task still running: its start plus its duration so far).

    Returns:
        How many spans share some time with another of their scope (0 where none does).
        Sorting: O(n log n).
    """
    by_scope: dict[Hashable, list[tuple[float, float, int]]] = {}
    for k, (scope, start, finish) in enumerate(spans):
        by_scope.setdefault(scope, []).append((start, finish, k))
    overlapping: set[int] = set()
    for items in by_scope.values():
        items.sort()
        latest, holder = float("-inf"), -1  # the latest finish so far, and whose
        for start, finish, k in items:
            if start < latest:
                overlapping.update((k, holder))
            if finish > latest:
                latest, holder = finish, k
    return len(overlapping)
