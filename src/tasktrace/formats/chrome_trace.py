"""Task trees as Chrome trace-event JSON, which Perfetto and ``chrome://tracing`` open directly.

Output: ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}`` with

- one complete event (``"ph": "X"``) per task: ``name`` = label, ``ts`` = start in microseconds
  since the root task's start (``otherData.start_time_unix_s`` holds that origin), ``dur`` =
  ``finish_time - start_time`` in microseconds, the same clock as ``ts``, so slices nest (else,
  for a running task, its ``duration``), ``args`` = status, task id and every measurement (the
  measured ``duration`` among them; the energies with their ``*_energy_short_task`` flags,
  ``true`` where the figure is approximate);
- processes and threads: the root task is process 1; a ``subprocess`` task starts a new process.
  Subtasks share their parent's thread track unless they overlap an earlier sibling, in which
  case they go to a new thread track, so every track nests properly;
- counter tracks (``"ph": "C"``) per process for peak RSS, peak GPU memory and CPU/GPU/system
  energy where tasks have them: at a task's start the counter takes the task's value, at its end
  the enclosing task's value (0 at the root's end);
- metadata events (``"ph": "M"``) naming processes (``hostname: label``) and threads.

Events are sorted by ``ts`` (metadata first; at equal ``ts`` longer slices first). Tasks with no
``start_time`` (never started) are left out.

Thread-safety: pure functions.
"""

from __future__ import annotations

import itertools
from typing import Any

from tasktrace.core.record import TaskRecord as Task  # the record: these read fields only
from tasktrace.core.warn import quoted

__all__ = ["COUNTER_FIELDS", "task_to_chrome_trace"]

COUNTER_FIELDS: dict[str, str] = {
    "peak_memory": "peak RSS (bytes)",
    "peak_gpu_memory": "peak GPU memory (bytes)",
    "cpu_power": "CPU energy (J)",
    "gpu_power": "GPU energy (J)",
    "system_power": "system energy (J)",
}
"""Task field → counter track name (energy fields hold joules despite the seed's names)."""

_ARG_FIELDS = (
    "status",
    "task_id",
    "duration",
    "cpu_time",
    "peak_memory",
    "peak_gpu_memory",
    "cpu_power",
    "gpu_power",
    "system_power",
    "dram_energy_j",
    "cpu_energy_short_task",  # true: that energy is approximate (reports mark it ≈)
    "gpu_energy_short_task",
    "system_energy_short_task",
    "children_cpu_time_s",
    "children_peak_rss_bytes",
    "machine",
    "hostname",
)


def _duration_s(task: Task) -> float | None:
    # The slice's length on the clock of its start (the wall clock of start_time): the measured
    # duration (perf_counter) leaves out tasktrace's own start-up work, so a parent's slice would
    # end before its last subtask's. A task without finish_time (running) has its duration.
    if task.start_time is not None and task.finish_time is not None:
        return max(task.finish_time - task.start_time, 0.0)
    return task.duration


def _args(task: Task) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name in _ARG_FIELDS:
        value = getattr(task, name)
        if value is not None:
            args[name] = (
                value.value
                if hasattr(value, "value")
                else str(value)
                if name == "task_id"
                else value
            )
    for key, value in (task.__pydantic_extra__ or {}).items():
        args.setdefault(key, value)
    return args


def task_to_chrome_trace(task: Task) -> dict[str, Any]:  # noqa: PLR0915 - one pass over the tree
    """Convert a task tree to a Chrome trace-event document (see the module docstring).

    Args:
        task: The root task; it must have a ``start_time``.

    Returns:
        A JSON-serialisable dict with ``traceEvents`` sorted by timestamp.

    Raises:
        ValueError: The root task has no ``start_time``.
    """
    if task.start_time is None:
        label = quoted(task.label)
        raise ValueError(f"task {label} has no start_time: nothing to place on a timeline")
    origin = task.start_time
    pids = itertools.count(1)
    tids = itertools.count(1)
    events: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []

    def us(seconds: float) -> float:
        return round((seconds - origin) * 1e6, 3)

    def name_process(pid: int, node: Task) -> None:
        meta.append(
            {
                "name": "process_name",
                "ph": "M",
                "pid": pid,
                "tid": 0,
                "args": {"name": f"{node.hostname}: {node.label}"},
            }
        )

    def name_thread(pid: int, tid: int, name: str) -> None:
        meta.append(
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
        )

    root_pid, root_tid = next(pids), next(tids)
    name_process(root_pid, task)
    name_thread(root_pid, root_tid, task.label)
    # (node, pid, tid, enclosing counter values)
    stack: list[tuple[Task, int, int, dict[str, float]]] = [(task, root_pid, root_tid, {})]
    while stack:
        node, pid, tid, outer = stack.pop()
        assert node.start_time is not None  # filtered below
        start = us(node.start_time)
        dur_s = _duration_s(node)
        if dur_s is not None:
            events.append(
                {
                    "name": node.label,
                    "cat": "task",
                    "ph": "X",
                    "ts": start,
                    "dur": round(dur_s * 1e6, 3),
                    "pid": pid,
                    "tid": tid,
                    "args": _args(node),
                }
            )
        inner = dict(outer)
        for field, counter in COUNTER_FIELDS.items():
            value = getattr(node, field)
            if value is None:
                continue
            inner[field] = value
            events.append(
                {"name": counter, "ph": "C", "ts": start, "pid": pid, "args": {"value": value}}
            )
            if dur_s is not None:
                events.append(
                    {
                        "name": counter,
                        "ph": "C",
                        "ts": round(start + dur_s * 1e6, 3),
                        "pid": pid,
                        "args": {"value": outer.get(field, 0)},
                    }
                )
        lanes: list[tuple[int, float]] = []  # (tid, end of its last sibling) for this node
        children = sorted(
            (c for c in node.subtasks if c.start_time is not None),
            key=lambda c: c.start_time or 0.0,
        )
        placed: list[tuple[Task, int, int, dict[str, float]]] = []
        for child in children:
            assert child.start_time is not None  # filtered above
            child_dur = _duration_s(child) or 0.0
            if child.subprocess:
                child_pid, child_tid = next(pids), next(tids)
                name_process(child_pid, child)
                name_thread(child_pid, child_tid, child.label)
                placed.append((child, child_pid, child_tid, {}))
                continue
            for i, (lane_tid, lane_end) in enumerate(lanes):
                if child.start_time >= lane_end:
                    lanes[i] = (lane_tid, child.start_time + child_dur)
                    child_tid = lane_tid
                    break
            else:
                child_tid = tid if not lanes else next(tids)
                if lanes:
                    name_thread(pid, child_tid, f"{node.label} (concurrent {len(lanes)})")
                lanes.append((child_tid, child.start_time + child_dur))
            placed.append((child, pid, child_tid, inner))
        stack.extend(reversed(placed))
    events.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {"start_time_unix_s": origin, "root_task_id": str(task.task_id)},
    }
