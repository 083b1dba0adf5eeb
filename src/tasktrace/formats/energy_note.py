"""Which energy a task tree holds, and why the rest is missing (``show``, ``run``, report).

The tree says what was measured: each task's ``cpu_power``, ``gpu_power`` and
``system_power`` (joules) with ``<scope>_energy_source`` naming the meter, and ``dram_energy_j``
(RAPL's ``dram`` zones, the only source of it). Why a scope is
missing comes from the meters' availability checks (:func:`tasktrace.meters.base.meter_checks`):
this process's at the end of ``tasktrace run``, or those recorded in a task file as the root's
``meters`` extra data (by ``tasktrace run --file`` and every ``Task(file=...)`` root: see
:mod:`tasktrace.tree.meters_record`; read back by :func:`recorded_meters`), so that ``show`` and
the report on any machine can say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tasktrace.core.record import TaskRecord
from tasktrace.meters.base import MeterCheck
from tasktrace.tree.meters_record import METERS_KEY, meters_record

__all__ = [
    "METERS_KEY",
    "METER_SCOPES",
    "MISSING_REASONS",
    "SCOPE_NEEDS",
    "SCOPE_TITLES",
    "EnergyFacts",
    "energy_facts",
    "energy_note",
    "meters_record",
    "recorded_meters",
    "short_task_note",
]

SCOPE_TITLES = {
    "cpu": "CPU energy",
    "gpu": "GPU energy",
    "system": "system energy",
    "dram": "DRAM energy",
}
"""Each energy scope (``<scope>_power``, in joules; DRAM's is ``dram_energy_j``) by its name on a
task line."""
_VALUE_FIELDS = {scope: f"{scope}_power" for scope in SCOPE_TITLES} | {"dram": "dram_energy_j"}
_COLUMNS = {scope: f"{scope}_energy_j" for scope in SCOPE_TITLES}  # the measures' columns
_DRAM_SOURCE = "rapl (dram)"  # the RAPL meter alone writes dram_energy_j (no source field)

METER_SCOPES = {
    "rapl": ("cpu", "dram"),
    "nvml": ("gpu",),
    "prometheus": ("cpu", "gpu", "system"),
}
"""The scopes each built-in energy meter can measure (Prometheus: those with a power query)."""
_ORDER = {name: i for i, name in enumerate(METER_SCOPES)}

SCOPE_NEEDS = {
    "cpu": "needs a readable RAPL counter (/sys/class/powercap, often root-only) or a "
    "Prometheus cpu power query for the machine",
    "gpu": "needs an NVIDIA GPU seen through NVML (tasktrace[nvml]; not a MIG slice) or a "
    "Prometheus gpu power query for the machine",
    "system": "comes only from a Prometheus system power query for the machine",
    "dram": "needs RAPL dram zones (an intel-rapl:N:M zone named dram, readable as the CPU's; "
    "many CPUs and most virtual machines have none)",
}
"""What each energy scope needs, said where a file does not record why it is missing."""


MISSING_REASONS = {
    "duration_s": "not in the file (a task file saved when its task started has no duration "
    "until its first refresh or its finish)",
    "cpu_time_s": "not in the file (CPU time comes from getrusage at each task's start and finish)",
    "peak_memory_bytes": "not in the file (peak RSS comes from the kernel's high-water mark)",
    "peak_gpu_memory_bytes": "read from torch.cuda.max_memory_allocated where the program "
    "imported torch and used CUDA, else sampled from NVML (the process's GPU memory), which needs "
    "an NVIDIA driver",
    "cpu_energy_j": SCOPE_NEEDS["cpu"],
    "gpu_energy_j": SCOPE_NEEDS["gpu"],
    "system_energy_j": SCOPE_NEEDS["system"],
    "dram_energy_j": SCOPE_NEEDS["dram"],
    "emissions_g": "needs measured energy and a carbon intensity for the task's machine",
}
"""What each measure (by column) needs, said where a run lacks it: the report's facts,
``compare``'s note. Why an energy meter did not measure is known only where the file records it
(a root with a file records its ``meters``): then those say that too (:func:`recorded_meters`)."""


@dataclass
class EnergyFacts:
    """What a task tree holds of energy.

    Attributes:
        tasks: Tasks in the tree.
        counts: Scope (``cpu``, ``gpu``, ``system``, ``dram``) → tasks with a value.
        sources: Scope → ``"source (what it covers)"`` texts, sorted (``"rapl (package)"``).
        meters: Names of the meters that gave any value (energy, or NVML's GPU memory).
        short: Tasks with an energy whose source flagged them as shorter than its update period.
    """

    tasks: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    meters: set[str] = field(default_factory=set)
    short: int = 0

    def missing(self) -> list[str]:
        """Return the scopes no task has a value of, in :data:`SCOPE_TITLES` order."""
        return [scope for scope in SCOPE_TITLES if not self.counts.get(scope)]

    def summary(self) -> str:
        """``"energy: CPU energy in 11 of 11 tasks, from rapl (package); no GPU energy, ..."``."""
        measured = [
            f"{SCOPE_TITLES[s]} in {self.counts[s]:,} of {self.tasks:,} tasks"
            + (f", from {', '.join(self.sources[s])}" if self.sources.get(s) else "")
            for s in SCOPE_TITLES
            if self.counts.get(s)
        ]
        missing = ", ".join(f"no {SCOPE_TITLES[s]}" for s in self.missing())
        parts = [*measured, missing] if missing else measured
        if self.short:
            parts.append(short_task_note(self.short))
        return "energy: " + "; ".join(parts)


def short_task_note(tasks: int) -> str:
    """``"≈: 2 tasks shorter than the energy source's update period (approximate)"``.

    What the mark ``≈`` means, said once below a view that shows it (``show``'s energy note,
    ``compare``, the report's facts).
    """
    plural = "s" if tasks != 1 else ""
    return f"≈: {tasks:,} task{plural} shorter than the energy source's update period (approximate)"


def _meter_of(source: str) -> str:
    """Return the meter that writes ``source`` (``"nvml-counter"`` → ``"nvml"``)."""
    return source.split("-", 1)[0]


_SCOPE_FIELDS: tuple[tuple[str, str, str, str | None, str | None], ...] = tuple(
    (
        scope,
        _VALUE_FIELDS[scope],
        f"{scope}_energy_short_task",
        f"{scope}_energy_source",
        f"{scope}_energy_scope",
    )
    if scope != "dram"
    # DRAM energy has no fields of its own but its value: RAPL's, with the CPU's flag.
    else (scope, _VALUE_FIELDS[scope], "cpu_energy_short_task", None, None)
    for scope in SCOPE_TITLES
)
"""Each scope with the names of its fields: energy, short-task flag, source, what it covers."""


def energy_facts(task: TaskRecord) -> EnergyFacts:
    """Count the tasks of ``task``'s tree with each energy scope, and their sources.

    Walks the tree once, iteratively (any depth).
    """
    facts = EnergyFacts()
    found: dict[str, set[str]] = {scope: set() for scope in SCOPE_TITLES}
    tasks = 0
    stack = [task]
    while stack:  # this visits every task of a large tree: the fields read as stored
        d = stack.pop().__dict__
        tasks += 1
        subtasks = d["subtasks"]
        if subtasks:
            stack.extend(subtasks)
        gpu_memory_source = d["peak_gpu_memory_source"]
        if gpu_memory_source:
            facts.meters.add(_meter_of(gpu_memory_source))
        if (
            d["cpu_power"] is None
            and d["gpu_power"] is None
            and d["system_power"] is None
            and d["dram_energy_j"] is None
        ):
            continue  # no energy (most tasks of most files)
        short = False
        for scope, energy, short_flag, source_field, scope_field in _SCOPE_FIELDS:
            if d[energy] is None:
                continue
            short = short or bool(d[short_flag])  # DRAM's: the CPU's (core.carbon)
            facts.counts[scope] = facts.counts.get(scope, 0) + 1
            if source_field is None:  # DRAM: the RAPL meter alone writes it
                facts.meters.add("rapl")
                found[scope].add(_DRAM_SOURCE)
                continue
            source = d[source_field]
            if source:
                facts.meters.add(_meter_of(source))
                where = d[scope_field] if scope_field is not None else None
                found[scope].add(f"{source} ({where})" if where else source)
        facts.short += short
    facts.tasks = tasks
    facts.sources = {scope: sorted(texts) for scope, texts in found.items() if texts}
    return facts


def recorded_meters(task: TaskRecord) -> dict[str, MeterCheck] | None:
    """Return the meters' checks recorded in ``task``'s ``meters`` extra data, by name.

    ``None`` where the task has no such record (a file of another program or an older
    tasktrace, a nested task); entries not in the form of :func:`meters_record` are left out.
    """
    record = (task.__pydantic_extra__ or {}).get(METERS_KEY)
    if not isinstance(record, dict):
        return None
    checks = {}
    for name, entry in record.items():
        if isinstance(entry, dict) and isinstance(entry.get("available"), bool):
            reason = entry.get("reason")
            checks[str(name)] = MeterCheck(
                str(name), entry["available"], reason if isinstance(reason, str) else None
            )
    return checks


def energy_note(
    facts: EnergyFacts, checks: Mapping[str, MeterCheck] | None, whose: str
) -> list[str]:
    """Return the lines that say which energy was measured and why the rest was not.

    The first line is :meth:`EnergyFacts.summary`. Then, where a scope is missing, the meters
    that could have measured it and did not, each with its reason (which names the fix), under
    the heading ``"why (WHOSE):"``; a missing scope no such meter speaks for (no ``checks``: a
    file that does not record them) gets what it needs (:data:`SCOPE_NEEDS`) instead.

    Args:
        facts: What the tree holds (:func:`energy_facts`).
        checks: The meters' checks, by name: this process's, or recorded in the file.
        whose: Whose checks they are, for the heading (``"this machine's meters now"``).

    Returns:
        Plain text lines (no markup), the later ones indented by two spaces.
    """
    missing = facts.missing()
    lines = [facts.summary()]
    if not missing:
        return lines
    explained: set[str] = set()
    reasons = []
    for name, check in sorted((checks or {}).items(), key=lambda item: _ORDER.get(item[0], 9)):
        scopes = [s for s in METER_SCOPES.get(name, ()) if s in missing]
        if not scopes or name in facts.meters:
            continue
        explained.update(scopes)
        why = (
            f"not available: {check.reason or 'it gave no reason'}"
            if not check.available
            else "available, but none of these tasks has a value of it"
        )
        reasons.append(f"  {name}: {why}")
    if reasons:
        lines.append(f"why ({whose}):")
        lines.extend(reasons)
    needs = [f"  {SCOPE_TITLES[s]} {SCOPE_NEEDS[s]}" for s in missing if s not in explained]
    if needs:
        lines.append("what the rest needs:" if reasons else "what each needs:")
        lines.extend(needs)
    return lines
