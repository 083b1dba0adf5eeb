"""A task's measures as numbers, energy in total and emissions: nothing counted twice or made up.

The measures (:func:`measure_values`): every figure a task line, ``show --totals``, ``compare``,
``table`` and the report print, in SI units, from one function.

Energy in total (:func:`total_energy_j`): the system energy where it was measured (it already
covers the CPUs, GPUs and memory), else the sum of the CPU, GPU and DRAM energy that were
measured (DRAM left out when the CPU figure is RAPL's ``platform`` domain, which includes it).

Emissions (:func:`emissions_g`): energy in kWh (1 kWh = 3.6 MJ, :data:`JOULES_PER_KWH`) times
the machine's carbon intensity in g CO₂e per kWh (:class:`CarbonIntensity`, from the settings'
``[machines.NAME] carbon_intensity_g_per_kwh`` or one override).

Approximate figures (:data:`SHORT_TASK_FLAGS`): an energy whose source flagged the task as
shorter than its update period (``<scope>_energy_short_task``), and the total and emissions
counting one, carry a flag in :func:`measure_values`, so that every view marks the same figures.

These are public as :mod:`tasktrace.formats.measures`' names too (defined here, below the
views, so that ``show``'s lines and totals and the formats share one implementation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import Settings, get_settings

__all__ = [
    "ENERGY_TITLES",
    "JOULES_PER_KWH",
    "SHORT_TASK_FLAGS",
    "CarbonIntensity",
    "emissions_g",
    "energy_parts",
    "measure_values",
    "short_task_flags",
    "total_energy_j",
    "usage_values",
]

JOULES_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour (1 kWh = 1000 W × 3600 s = 3.6 MJ)."""


ENERGY_TITLES = {
    "cpu_energy_j": "CPU energy",
    "gpu_energy_j": "GPU energy",
    "system_energy_j": "system energy",
    "dram_energy_j": "DRAM energy",
}
"""Each energy measure's column (joules) by its name on a task line, in the line's order."""


SHORT_TASK_FLAGS = {
    "energy_j": "energy_short_task",
    "cpu_energy_j": "cpu_energy_short_task",
    "gpu_energy_j": "gpu_energy_short_task",
    "system_energy_j": "system_energy_short_task",
    "dram_energy_j": "dram_energy_short_task",
    "emissions_g": "emissions_short_task",
}
"""Each measure that can be approximate, by column → the key of its flag in :func:`measure_values`.

The flag is ``True`` where the figure comes from (or, for ``energy_j`` and ``emissions_g``,
counts) an energy whose source flagged the task as shorter than its update period: a RAPL
counter's ~1 ms, NVML's energy counter's period, a Prometheus scrape interval. Its name is the
measure's name (:data:`tasktrace.formats.measures.MEASURES`) with ``_short_task``: the CPU, GPU
and system flags are the task fields of those names, as recorded."""


def energy_parts(task: TaskRecord) -> dict[str, float]:
    """Return the measured energies that make up the task's total, by column, in joules.

    ``{"system_energy_j": ...}`` (the whole machine, from a Prometheus query) when it was
    measured; else the measured ones of ``cpu_energy_j``, ``gpu_energy_j`` and
    ``dram_energy_j`` (``dram`` is left out when ``cpu_energy_scope`` is ``"platform"``: RAPL's
    ``psys`` domain includes it). Empty when no energy was measured.
    """
    d = task.__dict__  # the fields as stored: this runs for every task of a large tree
    system = d["system_power"]
    if system is not None:
        return {"system_energy_j": system}
    cpu, gpu, dram = d["cpu_power"], d["gpu_power"], d["dram_energy_j"]
    parts: dict[str, float] = {}
    if cpu is not None:
        parts["cpu_energy_j"] = cpu
    if gpu is not None:
        parts["gpu_energy_j"] = gpu
    if dram is not None and d["cpu_energy_scope"] != "platform":
        parts["dram_energy_j"] = dram
    return parts


def total_energy_j(task: TaskRecord) -> float | None:
    """Return the task's energy in joules with nothing counted twice, or ``None`` if unmeasured.

    The sum of :func:`energy_parts`: ``system_power`` where it was measured, else the measured
    CPU, GPU and DRAM energy (DRAM not again where the CPU figure is the platform's).
    """
    parts = energy_parts(task)
    return math.fsum(parts.values()) if parts else None


def short_task_flags(
    task: TaskRecord, parts: Mapping[str, float] | None = None
) -> dict[str, bool | None]:
    """Return the energy flags of :data:`SHORT_TASK_FLAGS` (all but ``emissions_short_task``).

    ``cpu_energy_short_task``, ``gpu_energy_short_task`` and ``system_energy_short_task`` are
    the task's fields as recorded (``None`` where the source recorded none). DRAM energy, read
    from RAPL with the CPU's counters, goes with the CPU's flag (``None`` where no DRAM energy
    was measured). ``energy_short_task`` is ``True`` where any of :func:`energy_parts` (given
    as ``parts``, computed when not) is flagged, ``None`` where no energy was measured.
    Reads the task's fields only (thread-safe on a finished task).
    """
    d = task.__dict__  # the fields as stored: this runs for every task of a large tree
    cpu, gpu, system = (
        d["cpu_energy_short_task"],
        d["gpu_energy_short_task"],
        d["system_energy_short_task"],
    )
    parts = energy_parts(task) if parts is None else parts
    if not parts:
        energy = None
    elif "system_energy_j" in parts:  # the system energy alone: it covers the rest
        energy = system is True
    else:  # DRAM goes with the CPU's flag, below
        energy = (cpu is True and parts.keys() & _RAPL_PARTS != set()) or (
            gpu is True and "gpu_energy_j" in parts
        )
    return {
        "cpu_energy_short_task": cpu,
        "gpu_energy_short_task": gpu,
        "system_energy_short_task": system,
        "dram_energy_short_task": None if d["dram_energy_j"] is None else cpu is True,
        "energy_short_task": energy,
    }


_RAPL_PARTS = frozenset(("cpu_energy_j", "dram_energy_j"))


def emissions_g(energy_j: float | None, intensity_g_per_kwh: float | None) -> float | None:
    """Grams of CO₂e for ``energy_j`` joules at ``intensity_g_per_kwh`` (``None`` if either is).

    ``energy_j / 3.6e6 * intensity_g_per_kwh``: 3.6 MJ at 400 g/kWh is 400 g.
    """
    if energy_j is None or intensity_g_per_kwh is None:
        return None
    return energy_j / JOULES_PER_KWH * intensity_g_per_kwh


@dataclass(frozen=True)
class CarbonIntensity:
    """Carbon intensity of electricity (g CO₂e per kWh), per machine label.

    Attributes:
        override_g_per_kwh: One intensity for every task (``--carbon-intensity``), or ``None``.
        by_machine: Intensity by machine label, from the settings' ``[machines.NAME]`` tables
            (``carbon_intensity_g_per_kwh``); a task's ``machine`` field picks its entry.
    """

    override_g_per_kwh: float | None = None
    by_machine: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the override.

        Raises:
            ValueError: The override is negative, infinite or NaN.
        """
        value = self.override_g_per_kwh
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"carbon intensity {value!r} g/kWh: must be a number >= 0")

    @classmethod
    def from_settings(
        cls, override_g_per_kwh: float | None = None, settings: Settings | None = None
    ) -> CarbonIntensity:
        """Build from ``override_g_per_kwh`` and the machines of ``settings`` (default: current).

        Raises:
            ValueError: The override is negative, infinite or NaN.
        """
        settings = settings if settings is not None else get_settings()
        by_machine = {
            name: m.carbon_intensity_g_per_kwh
            for name, m in settings.machines.items()
            if m.carbon_intensity_g_per_kwh is not None
        }
        return cls(override_g_per_kwh, by_machine)

    def __bool__(self) -> bool:
        """Whether any intensity is known (else emissions are never shown)."""
        return self.override_g_per_kwh is not None or bool(self.by_machine)

    def for_task(self, task: TaskRecord) -> float | None:
        """Return the intensity for ``task``: the override, else its machine's, else ``None``."""
        if self.override_g_per_kwh is not None:
            return self.override_g_per_kwh
        return None if task.machine is None else self.by_machine.get(task.machine)


def usage_values(task: TaskRecord) -> tuple[float | None, float | None, int | None]:
    """Return ``(duration_s, cpu_time_s, peak_memory_bytes)`` as :func:`measure_values` has them.

    The three measures that need no energy or carbon intensity, for walks over every task of a
    large tree (``show --totals``: a tuple, not :func:`measure_values`' dict of nine).
    ``cpu_time_s`` is :meth:`~tasktrace.Task.total_cpu`; ``peak_memory_bytes`` a ``tasktrace
    run`` command's own peak RSS (``children_peak_rss_bytes``), ``None`` where that is unknown
    (a command no larger than tasktrace: the root's ``peak_memory`` is tasktrace's, never
    given as the command's), else the task's ``peak_memory``. ``None`` where not measured.
    Reads the task's fields only (thread-safe on a finished task).
    """
    d = task.__dict__  # the fields as stored: this runs for every task of a large tree
    peak = d["children_peak_rss_bytes"]
    if peak is None and d["children_cpu_time_s"] is None:  # not a command: the task's own
        peak = d["peak_memory"]
    return d["duration"], task.total_cpu(), peak


def measure_values(
    task: TaskRecord, carbon: CarbonIntensity | None = None
) -> dict[str, float | None]:
    """Every measure of one task by column name, in SI units, as ``tasktrace show`` prints it.

    ``cpu_time_s`` is :meth:`~tasktrace.Task.total_cpu`: the task's own process's CPU, plus what
    other processes reported below it (subprocess subtasks at any depth, a command's
    ``children_cpu_time_s`` under ``tasktrace run``), so a parent's figure includes every subtask's,
    wherever it ran. ``peak_memory_bytes`` is the task's peak RSS; for a command run by ``tasktrace
    run``, the command's own (``children_peak_rss_bytes``), ``None`` where it was not recorded (the
    root's ``peak_memory`` is tasktrace's). ``energy_j`` is :func:`total_energy_j`. ``emissions_g``
    is present only when ``carbon`` knows an intensity. Values that were not measured are ``None``.
    After the measures, the flags of :data:`SHORT_TASK_FLAGS` (:func:`short_task_flags`;
    ``emissions_short_task`` with ``emissions_g``, the total's): whether a figure is approximate,
    its task shorter than its energy source's update period. Reads the task's fields only
    (thread-safe on a finished task).
    """
    parts = energy_parts(task)
    energy = math.fsum(parts.values()) if parts else None  # total_energy_j, parts computed once
    duration, cpu, peak = usage_values(task)
    values: dict[str, float | None] = {
        "duration_s": duration,
        "cpu_time_s": cpu,
        "peak_memory_bytes": peak,
        "peak_gpu_memory_bytes": task.peak_gpu_memory,
        "energy_j": energy,
        "cpu_energy_j": task.cpu_power,
        "gpu_energy_j": task.gpu_power,
        "system_energy_j": task.system_power,
        "dram_energy_j": task.dram_energy_j,
    }
    flags = short_task_flags(task, parts)
    if carbon:
        grams = emissions_g(energy, carbon.for_task(task))
        values["emissions_g"] = grams
        flags["emissions_short_task"] = None if grams is None else flags["energy_short_task"]
    values.update(flags)  # bools beside the figures (see above)
    return values
