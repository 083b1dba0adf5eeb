"""The measures of a task as numbers in SI units, shared by reports, comparisons and tables.

One table, :data:`MEASURES`, names each measure (``duration``, ``cpu_time``, ``energy``, …), its
column in :func:`tasktrace.read_tasks` (unit in the name: ``duration_s``, ``peak_memory_bytes``,
``energy_j``), how groups of tasks aggregate it, and how it is printed in human units.

Energy in total (:func:`total_energy_j`): the system energy where it was measured (it already
covers the CPUs, GPUs and memory), else the sum of the CPU, GPU and DRAM energy that were
measured (DRAM left out when the CPU figure is RAPL's ``platform`` domain, which includes it).

Emissions (:func:`emissions_g`): energy in kWh (1 kWh = 3.6 MJ, :data:`JOULES_PER_KWH`) times
the machine's carbon intensity in g CO₂e per kWh (:class:`CarbonIntensity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import Settings, get_settings
from tasktrace.core.units import friendly_bytes, friendly_duration, friendly_grams, friendly_joules

__all__ = [
    "JOULES_PER_KWH",
    "MEASURES",
    "CarbonIntensity",
    "Measure",
    "emissions_g",
    "measure_values",
    "parse_measures",
    "total_energy_j",
]

JOULES_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour (1 kWh = 1000 W × 3600 s = 3.6 MJ)."""


def _friendly_bytes(value: float) -> str:
    return friendly_bytes(round(value))


@dataclass(frozen=True)
class Measure:
    """One measure of a task.

    Attributes:
        name: The name on the command line (``"duration"``, ``"cpu_time"``, ``"energy"``).
        column: The column in :func:`tasktrace.read_tasks`, with its unit (``"duration_s"``).
        title: A short human title (``"duration"``, ``"CPU time"``, ``"peak RSS"``).
        peak: ``True`` for a high-water mark: a group's figure is the largest value (``max``),
            not the sum (``total``).
        friendly: Formats a value of the column in human units (``"12.35s"``, ``"3.2 GiB"``).
    """

    name: str
    column: str
    title: str
    peak: bool
    friendly: Callable[[float], str]

    def signed(self, difference: float) -> str:
        """Format a difference in human units with its sign (``"+1.20s"``, ``"−350 MiB"``)."""
        return ("−" if difference < 0 else "+") + self.friendly(abs(difference))

    @property
    def aggregate(self) -> str:
        """``"max"`` for a peak, ``"total"`` otherwise: the group figure's name."""
        return "max" if self.peak else "total"


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("duration", "duration_s", "duration", False, friendly_duration),
        Measure("cpu_time", "cpu_time_s", "CPU time", False, friendly_duration),
        Measure("peak_memory", "peak_memory_bytes", "peak RSS", True, _friendly_bytes),
        Measure(
            "peak_gpu_memory", "peak_gpu_memory_bytes", "peak GPU memory", True, _friendly_bytes
        ),
        Measure("energy", "energy_j", "energy", False, friendly_joules),
        Measure("cpu_energy", "cpu_energy_j", "CPU energy", False, friendly_joules),
        Measure("gpu_energy", "gpu_energy_j", "GPU energy", False, friendly_joules),
        Measure("system_energy", "system_energy_j", "system energy", False, friendly_joules),
        Measure("dram_energy", "dram_energy_j", "DRAM energy", False, friendly_joules),
        Measure("emissions", "emissions_g", "CO₂e", False, friendly_grams),
    )
}
"""Every measure by its command-line name, in display order."""


def parse_measures(text: str) -> list[Measure]:
    """Parse a comma-separated list of measure names (``"duration,cpu_time,energy"``).

    Raises:
        ValueError: A name is not in :data:`MEASURES` (the message names it and the choices),
            or the list is empty.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no measure given")
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}")
    return [MEASURES[n] for n in dict.fromkeys(names)]


def total_energy_j(task: TaskRecord) -> float | None:
    """Return the task's energy in joules with nothing counted twice, or ``None`` if unmeasured.

    ``system_power`` (the whole machine, from a Prometheus query) when it was measured; else
    the sum of the measured ``cpu_power``, ``gpu_power`` and ``dram_energy_j`` (``dram`` is left
    out when ``cpu_energy_scope`` is ``"platform"``: RAPL's ``psys`` domain includes it).
    """
    if task.system_power is not None:
        return task.system_power
    parts = [task.cpu_power, task.gpu_power]
    if task.cpu_energy_scope != "platform":
        parts.append(task.dram_energy_j)
    known = [p for p in parts if p is not None]
    return math.fsum(known) if known else None


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


def measure_values(
    task: TaskRecord, carbon: CarbonIntensity | None = None
) -> dict[str, float | None]:
    """Every measure of one task (not its subtasks) by column name, in SI units.

    ``emissions_g`` is present only when ``carbon`` knows an intensity. Values that were not
    measured are ``None``.
    """
    energy = total_energy_j(task)
    values: dict[str, float | None] = {
        "duration_s": task.duration,
        "cpu_time_s": task.cpu_time,
        "peak_memory_bytes": task.peak_memory,
        "peak_gpu_memory_bytes": task.peak_gpu_memory,
        "energy_j": energy,
        "cpu_energy_j": task.cpu_power,
        "gpu_energy_j": task.gpu_power,
        "system_energy_j": task.system_power,
        "dram_energy_j": task.dram_energy_j,
    }
    if carbon:
        values["emissions_g"] = emissions_g(energy, carbon.for_task(task))
    return values
