"""A task tree as the nodes a report draws, with repeated siblings folded in large trees.

Above :data:`tasktrace.core.views.AUTO_COLLAPSE_TASKS` tasks (the threshold of ``tasktrace show``),
runs of repeated siblings (:func:`tasktrace.core.views.collapse_siblings`: labels equal but for
their numbers) become one node with a count; the subtasks of a folded node are merged by label
pattern into folded nodes in turn, so ``step 0…9999`` has one ``load batch #`` child holding
all 10,000 of them. Each node carries its measures (sums; the largest value for peaks) and
its hover text in human units.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tasktrace.core.lines import APPROXIMATE, OVERLAPPING
from tasktrace.core.record import TaskRecord as Task  # the record: these read fields only
from tasktrace.core.units import friendly_bytes, friendly_duration
from tasktrace.core.views import (
    AUTO_COLLAPSE_TASKS,
    SiblingRun,
    collapse_siblings,
    count_tasks,
    label_pattern,
)
from tasktrace.formats.energy_note import METERS_KEY
from tasktrace.formats.measures import (
    MEASURES,
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    measure_values,
)
from tasktrace.formats.rows import OVERLAP_SCOPES, count_overlapping

__all__ = ["MAIN_LANE", "FoldNode", "fold_tree", "hover_text", "utc_text"]

MAIN_LANE = "main process"
"""The timeline lane of tasks that ran in the root task's process."""
_EXTRA_TEXT_CHARS = 120
_PEAKS = {m.column for m in MEASURES.values() if m.peak}
_FLAGS = frozenset(SHORT_TASK_FLAGS.values())
_SHOWN_FIELDS = (  # (field, title) shown in a single task's hover text when set
    ("hostname", "host"),
    ("machine", "machine"),
    ("cpu_energy_source", "CPU energy source"),
    ("gpu_energy_source", "GPU energy source"),
    ("system_energy_source", "system energy source"),
    ("task_id", "task id"),
)


@dataclass
class FoldNode:
    """One node of the drawn tree: a task, or a folded group of repeated tasks.

    Attributes:
        tasks: The task, or the tasks folded into this node (in order).
        title: The label, or the folded labels in one (``"step 0…9999"``).
        parent: Index of the parent node in the list, ``None`` for the root.
        depth: Levels below the root.
        lane: The timeline row group: :data:`MAIN_LANE` or ``"process: <label>"`` for a
            subprocess (worker) task and everything below it.
        values: Measures by column (``duration_s``, …): sums over the tasks, the largest value
            for peaks; ``None`` where none was measured.
        known: By column, how many of the tasks have a value (the divisor of a mean).
        short: By column of :data:`~tasktrace.formats.measures.SHORT_TASK_FLAGS`, how many of
            those values are approximate (the task shorter than its energy source's update
            period); the hover text then puts ``≈`` before the figure.
        statuses: How many of its tasks have each status (``"finished"``, ``"failed"``, …).
        start_s: Earliest start, UNIX seconds (``None`` if unknown).
        finish_s: Latest finish, UNIX seconds (``None`` if unknown).
        overlapping: For a folded node, by column of
            :data:`~tasktrace.formats.rows.OVERLAP_SCOPES` (CPU time, energy, emissions), how
            many of its tasks ran at the same time as another of them in one process (CPU
            time) or on one machine: the total counts what they shared once per task.
    """

    tasks: list[Task]
    title: str
    parent: int | None
    depth: int
    lane: str
    values: dict[str, float | None]
    known: dict[str, int]
    short: dict[str, int]
    start_s: float | None
    finish_s: float | None
    statuses: Counter[str]
    overlapping: dict[str, int] = field(default_factory=dict)

    @property
    def folded(self) -> bool:
        """Whether this node stands for more than one task."""
        return len(self.tasks) > 1


def utc_text(unix_s: float) -> str:
    """``"2025-08-01 12:00:03.250 UTC"`` for UNIX seconds."""
    when = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} UTC"


def _aggregate(
    tasks: Sequence[Task], carbon: CarbonIntensity | None
) -> tuple[dict[str, float | None], dict[str, int], dict[str, int]]:
    per_task = [measure_values(t, carbon) for t in tasks]
    out: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    short: dict[str, int] = {}
    for column in per_task[0]:
        if column in _FLAGS:
            continue
        known = [value for v in per_task if (value := v[column]) is not None]
        out[column] = (max(known) if column in _PEAKS else sum(known)) if known else None
        counts[column] = len(known)
        flag = SHORT_TASK_FLAGS.get(column)
        if flag is not None:
            short[column] = sum(v[column] is not None and v[flag] is True for v in per_task)
    return out, counts, short


def _span(tasks: Sequence[Task]) -> tuple[float | None, float | None]:
    starts = [t.start_time for t in tasks if t.start_time is not None]
    finishes = []
    for t in tasks:
        if t.finish_time is not None:
            finishes.append(t.finish_time)
        elif t.start_time is not None and t.duration is not None:
            finishes.append(t.start_time + t.duration)
    return (min(starts) if starts else None), (max(finishes) if finishes else None)


def _overlapping(
    tasks: Sequence[Task], values: dict[str, float | None], process: dict[int, int]
) -> dict[str, int]:
    """By measured column of OVERLAP_SCOPES, how many of ``tasks`` overlap in its scope."""
    spans: dict[str, list[tuple[object, float, float]]] = {"process": [], "machine": []}
    for t in tasks:
        if t.start_time is None:
            continue
        finish = t.finish_time
        if finish is None:
            finish = t.start_time + (t.duration or 0.0)
        spans["process"].append((process[id(t)], t.start_time, finish))
        spans["machine"].append((t.hostname, t.start_time, finish))
    counts = {scope: count_overlapping(items) for scope, items in spans.items()}
    return {
        column: counts[scope]
        for column, scope in OVERLAP_SCOPES.items()
        if values.get(column) is not None and counts[scope]
    }


def fold_tree(
    root: Task, carbon: CarbonIntensity | None = None, fold: bool | None = None
) -> list[FoldNode]:
    """Return the nodes of ``root``'s tree in pre-order (iteratively: any depth).

    Args:
        root: The root task.
        carbon: Carbon intensities, for the ``emissions_g`` value.
        fold: Fold repeated siblings; ``None`` (default): when the tree has more than
            :data:`~tasktrace.core.views.AUTO_COLLAPSE_TASKS` tasks.
    """
    if fold is None:
        fold = count_tasks(root) > AUTO_COLLAPSE_TASKS
    nodes: list[FoldNode] = []
    process = {id(root): id(root)}  # each task's process, by its top task
    stack: list[tuple[list[Task], int | None, int, str]] = [([root], None, 0, MAIN_LANE)]
    while stack:
        tasks, parent, depth, lane = stack.pop()
        index = len(nodes)
        title = tasks[0].label if len(tasks) == 1 else SiblingRun(tasks).name()
        statuses = Counter(t.status.value for t in tasks)
        nodes.append(
            FoldNode(
                tasks,
                title,
                parent,
                depth,
                lane,
                *_aggregate(tasks, carbon),
                *_span(tasks),
                statuses,
            )
        )
        if len(tasks) > 1:
            nodes[-1].overlapping = _overlapping(tasks, nodes[-1].values, process)
        for task in tasks:
            for sub in task.subtasks:
                process[id(sub)] = id(sub) if sub.subprocess else process[id(task)]
        if len(tasks) == 1:
            items = collapse_siblings(tasks[0].subtasks) if fold else tasks[0].subtasks
            groups = [item.tasks if isinstance(item, SiblingRun) else [item] for item in items]
        else:
            by_pattern: dict[str, list[Task]] = {}
            for task in tasks:
                for sub in task.subtasks:
                    by_pattern.setdefault(label_pattern(sub.label), []).append(sub)
            groups = list(by_pattern.values())
        for group in reversed(groups):
            own_process = all(t.subprocess for t in group)
            name = group[0].label if len(group) == 1 else SiblingRun(group).name()
            stack.append((group, index, depth + 1, f"process: {name}" if own_process else lane))
    return nodes


def _extra_text(task: Task) -> list[str]:
    """Lines of the task's extra data: text as it is, other values as the file's JSON.

    The ``meters`` record of a ``tasktrace run`` root is left out: the run's facts give it,
    meter by meter.
    """
    lines = []
    for key, value in (task.__pydantic_extra__ or {}).items():
        if key == METERS_KEY and task.parent_id is None:
            continue
        text = (
            value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        )
        if len(text) > _EXTRA_TEXT_CHARS:
            text = text[: _EXTRA_TEXT_CHARS - 1] + "…"
        lines.append(f"{html.escape(str(key))}: {html.escape(text)}")
    return lines


def _task_text(task: Task) -> list[str]:
    """Lines of a single task's hover text beyond its measures."""
    lines = []
    if task.children_peak_rss_bytes is not None and task.peak_memory is not None:
        # a command under `tasktrace run`: its peak RSS is the measure above, this is ours
        lines.append(f"tasktrace's peak RSS: {friendly_bytes(task.peak_memory)}")
    if task.children_cpu_time_s is not None:
        lines.append(f"command's CPU in no task: {friendly_duration(task.children_cpu_time_s)}")
    for field_name, title in _SHOWN_FIELDS:
        value: Any = getattr(task, field_name)
        if value is not None:
            lines.append(f"{title}: {html.escape(str(value))}")
    if task.subprocess:
        lines.append("ran in a subprocess")
    lines.extend(_extra_text(task))
    return lines


def hover_text(node: FoldNode) -> str:
    """Describe the node's fields in human units, as plotly hover HTML (all text escaped).

    A figure that is or counts an approximate value (:attr:`FoldNode.short`) has ``≈`` before it.
    """
    lines = [f"<b>{html.escape(node.title)}</b>"]
    if node.folded:
        counts = ", ".join(f"{n:,} {s}" for s, n in node.statuses.most_common())
        lines.append(f"{len(node.tasks):,} tasks folded: {counts}")
    else:
        task = node.tasks[0]
        status = task.status.value
        if task.error is not None:
            status += f" ({task.error})"
        lines.append(f"status: {html.escape(status)}")
    if node.start_s is not None:
        lines.append(f"start: {utc_text(node.start_s)}")
    if node.finish_s is not None:
        lines.append(f"finish: {utc_text(node.finish_s)}")
    prefix = "total " if node.folded else ""
    for measure in MEASURES.values():
        value = node.values.get(measure.column)
        if value is None:
            continue
        name = f"max {measure.title}" if node.folded and measure.peak else prefix + measure.title
        mark = APPROXIMATE if node.short.get(measure.column) else ""
        text = f"{name}: {mark}{measure.friendly(value)}"
        if node.folded and not measure.peak:
            text += f" (mean {mark}{measure.friendly(value / node.known[measure.column])})"
        shared = node.overlapping.get(measure.column)
        if shared:
            where = "one process" if OVERLAP_SCOPES[measure.column] == "process" else "one machine"
            text += f" {OVERLAPPING} ({shared:,} ran at the same time in {where}: counted per task)"
        lines.append(text)
    if not node.folded:
        lines.extend(_task_text(node.tasks[0]))
    return "<br>".join(lines)
