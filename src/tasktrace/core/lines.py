"""One task as one line of ``tasktrace show``, the live panel and the notebook view.

Every figure on a line comes from :func:`tasktrace.core.carbon.measure_values`, the measures
``show --totals``, ``compare``, ``table`` and the report print too; the emissions on a line are
computed from energies the line shows, and where it shows more than one energy it names those
the emissions are of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeAlias

from rich.markup import escape

from tasktrace.core.carbon import (
    ENERGY_TITLES,
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    energy_parts,
    measure_values,
)
from tasktrace.core.record import TaskRecord as Task  # the record: every line reads fields only
from tasktrace.core.record import TaskStatus
from tasktrace.core.status import exit_status_error
from tasktrace.core.units import (
    friendly_bytes,
    friendly_duration,
    friendly_grams,
    friendly_joules,
    valid_measure,
)

__all__ = [
    "APPROXIMATE",
    "CORES_SHOWN_ABOVE",
    "CORES_SHOWN_FROM_S",
    "NOT_MEASURED",
    "OVERLAPPING",
    "approximate",
    "cpu_text",
    "energy_texts",
    "is_command",
    "memory_text",
    "printable",
    "task_line",
]

CORES_SHOWN_ABOVE = 1.05
"""A task line adds the mean number of busy cores (``1.9 cores``) where CPU time is more than
this many times the duration; below it, CPU time and duration speak for themselves."""
CORES_SHOWN_FROM_S = 0.01
"""Shortest duration, in seconds, for which a task line gives busy cores: the CPU time of a
shorter task (``getrusage``, read at start and finish beside the clock) is of the order of
tasktrace's own reads, and a ratio of the two is noise (a 12 µs task showed ``1.2 cores``)."""

_STATUS_STYLE = {
    TaskStatus.FINISHED: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.CANCELLED: "yellow",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.PENDING: "dim",
}

Values: TypeAlias = dict[str, float | None]
"""A task's measures by column, as :func:`~tasktrace.core.carbon.measure_values` returns them."""


def printable(text: str) -> str:
    """Replace control characters so a label cannot move the cursor or clear the screen."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def task_line(task: Task, carbon: CarbonIntensity | None = None) -> str:
    """One task as a line of rich markup: label, status, error and named measures in human units.

    ``label  finished  12.50s  CPU time 24.00s (1.9 cores)  peak RSS 3.0 GiB  peak GPU memory
    1.2 GiB  CPU energy 1.2 kJ  GPU energy 567.0 J  DRAM energy 80.1 J  CO₂e 203 mg (from CPU
    energy + GPU energy + DRAM energy)``: the duration first, then each measure after its name
    (see :func:`cpu_text`, :func:`memory_text` and :func:`energy_texts`); a measure that is not
    in the task is left out. The figures are :func:`~tasktrace.core.carbon.measure_values`'.
    """
    parts = [f"[bold]{escape(printable(task.label))}[/]"]
    style = _STATUS_STYLE.get(task.status, "")
    parts.append(f"[{style}]{task.status.value}[/]")
    exit_code = (task.__pydantic_extra__ or {}).get("exit_code")
    if type(exit_code) is int and exit_code != 0:  # a command's exit status (`run` records it)
        parts.append(f"[{style}]exit {exit_code}[/]")
    if task.error is not None and (
        type(exit_code) is not int or task.error != exit_status_error(exit_code)
    ):  # "exit status 3" beside "exit 3" says nothing more
        error = printable(task.error)
        parts.append(f"[{style}]({escape(error if len(error) <= 80 else error[:79] + '…')})[/]")
    values = measure_values(task, carbon)
    duration = values["duration_s"]
    if duration is not None:
        parts.append(friendly_duration(duration))
    texts = (cpu_text(task, values), memory_text(task, values))
    parts.extend(text for text in texts if text is not None)
    gpu_memory = values["peak_gpu_memory_bytes"]
    if gpu_memory is not None:
        parts.append(f"peak GPU memory {friendly_bytes(gpu_memory)}")
    parts.extend(energy_texts(task, values))
    return "  ".join(parts)


APPROXIMATE: Final = "≈"
"""Put before an energy whose source flagged the task as shorter than its update period, and
before a figure counting one (emissions, a group's total, a difference): in every view that
prints text (``show``, ``compare``, ``table``, the report, LaTeX tables)."""

NOT_MEASURED: Final = "—"
"""The cell of a figure that was not measured, in a text view's table (``compare``, ``table``,
the report): never empty, so that it does not read as zero or as a fault of the view."""


OVERLAPPING: Final = "‡"
"""Put after a group's total and mean (``table``, the report's per-label table) where some of
its tasks ran at the same time in one process (CPU time) or on one machine (energy): each holds
what they shared, so the total counts it once per task (see
:data:`tasktrace.formats.rows.OVERLAP_SCOPES`)."""


def approximate(values: Mapping[str, object], column: str) -> str:
    """:data:`APPROXIMATE` where ``values`` flag ``column``'s figure as approximate, else ``""``.

    The flag is the one :func:`~tasktrace.core.carbon.measure_values` carries
    (:data:`~tasktrace.core.carbon.SHORT_TASK_FLAGS`); a column without one is never marked.
    """
    flag = SHORT_TASK_FLAGS.get(column)
    return APPROXIMATE if flag is not None and values.get(flag) is True else ""


def energy_texts(task: Task, values: Values | None = None) -> list[str]:
    """Each measured energy after its name, then the emissions where ``values`` holds them.

    ``["CPU energy 113.5 J", "DRAM energy 11.3 J", "CO₂e 13.9 mg (from CPU energy + DRAM
    energy)"]``. The emissions are of :func:`~tasktrace.core.carbon.energy_parts`, every one of
    them shown; where the line shows more than one energy, the note names those the emissions
    are of (the system energy alone where it was measured: it covers the rest). DRAM energy
    that RAPL's platform domain already includes is marked ``(in CPU energy)``. An energy whose
    source flagged the task as shorter than its update period (the flags ``values`` carry,
    :data:`~tasktrace.core.carbon.SHORT_TASK_FLAGS`: a RAPL counter's ~1 ms, a Prometheus
    scrape interval; DRAM goes with the CPU's RAPL flag) is marked :data:`APPROXIMATE`
    (``"CPU energy ≈42.5 J"``), and so are emissions counting it.

    Args:
        task: The task.
        values: Its :func:`~tasktrace.core.carbon.measure_values` (computed when not given);
            emissions are shown only where they hold ``emissions_g``.
    """
    values = measure_values(task) if values is None else values
    counted = energy_parts(task)
    texts = []
    for column, title in ENERGY_TITLES.items():
        value = values[column]
        if value is None:
            continue
        text = f"{title} {approximate(values, column)}{friendly_joules(value)}"
        if column == "dram_energy_j" and not counted.keys() & {column, "system_energy_j"}:
            text += " (in CPU energy)"  # RAPL's platform domain (psys) includes the DRAM
        texts.append(text)
    grams = values.get("emissions_g")
    if grams is not None:
        text = f"CO₂e {approximate(values, 'emissions_g')}{friendly_grams(grams)}"
        if len(texts) > 1:
            text += f" (from {' + '.join(ENERGY_TITLES[column] for column in counted)})"
        texts.append(text)
    return texts


def is_command(task: Task) -> bool:
    """Whether ``task`` is a command run by ``tasktrace run`` (it has the command's own usage)."""
    return task.children_cpu_time_s is not None or task.children_peak_rss_bytes is not None


def cpu_text(task: Task, values: Values | None = None) -> str | None:
    """``"CPU time 6.10s (1.9 cores; 249ms in no task)"``, or ``None`` when CPU time is unknown.

    The CPU time is :func:`~tasktrace.core.carbon.measure_values`' (``values``, computed when
    not given): :meth:`~tasktrace.Task.total_cpu`, the task's own process's, plus its
    subprocess subtasks' and, for a command under ``tasktrace run``, the command's. Where it is
    more than :data:`CORES_SHOWN_ABOVE` times the duration (threads or processes working in
    parallel), for a task of at least :data:`CORES_SHOWN_FROM_S`, the mean number of busy cores
    is added. For a command whose subprocess subtasks
    report CPU (its total is more than its own and its command's: read from the figures, not
    from the subtasks, so a view that leaves them out keeps the note), the part of the
    command's CPU that none of them accounts for (``children_cpu_time_s``) is named too.
    """
    values = measure_values(task) if values is None else values
    total = values["cpu_time_s"]
    if total is None:
        return None
    notes = []
    duration = values["duration_s"]
    if (
        duration  # neither 0 nor None
        and valid_measure(duration)
        and valid_measure(total)
        and duration >= CORES_SHOWN_FROM_S
        and total > CORES_SHOWN_ABOVE * duration
    ):
        notes.append(f"{total / duration:.1f} cores")
    own = (task.cpu_time or 0.0) + (task.children_cpu_time_s or 0.0)
    if task.children_cpu_time_s is not None and total > own:  # subprocess subtasks report CPU
        notes.append(f"{friendly_duration(task.children_cpu_time_s)} in no task")
    text = f"CPU time {friendly_duration(total)}"
    return f"{text} ({'; '.join(notes)})" if notes else text


def memory_text(task: Task, values: Values | None = None) -> str | None:
    """``"peak RSS 3.0 GiB"``, or ``None`` when no peak RSS is known.

    :func:`~tasktrace.core.carbon.measure_values`' peak RSS (``values``, computed when not
    given): the task's; for a command under ``tasktrace run``, the command's own
    (``children_peak_rss_bytes``), and where that is unknown (a command no larger than
    tasktrace itself) tasktrace's, named as such.
    """
    own = is_command(task) and task.children_peak_rss_bytes is None
    values = measure_values(task) if values is None else values
    peak = task.peak_memory if own else values["peak_memory_bytes"]
    if peak is None:
        return None
    name = "tasktrace's peak RSS" if own else "peak RSS"
    return f"{name} {friendly_bytes(peak)}"
