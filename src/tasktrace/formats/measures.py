"""The measures of a task as numbers in SI units, shared by reports, comparisons and tables.

One table, :data:`MEASURES`, names each measure (``duration``, ``cpu_time``, ``energy``, …), its
column in :func:`tasktrace.read_tasks` (unit in the name: ``duration_s``, ``peak_memory_bytes``,
``energy_j``), how groups of tasks aggregate it, and how it is printed in human units.

Every measure of one task (:func:`measure_values`), energy in total, emissions and carbon
intensity (:func:`total_energy_j`, :func:`emissions_g`, :class:`CarbonIntensity`,
:data:`JOULES_PER_KWH`) and which figures are approximate (:data:`SHORT_TASK_FLAGS`) are
defined in :mod:`tasktrace.core.carbon` (``show``'s lines and totals and the notebook view,
below this layer, print them too) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tasktrace.core.carbon import (
    ENERGY_TITLES,
    JOULES_PER_KWH,
    SHORT_TASK_FLAGS,
    CarbonIntensity,
    emissions_g,
    measure_values,
    total_energy_j,
)
from tasktrace.core.lines import APPROXIMATE, NOT_MEASURED
from tasktrace.core.units import friendly_bytes, friendly_duration, friendly_grams, friendly_joules

__all__ = [
    "JOULES_PER_KWH",
    "MEASURES",
    "SHORT_TASK_FLAGS",
    "CarbonIntensity",
    "Measure",
    "emissions_g",
    "measure_values",
    "parse_measures",
    "total_energy_j",
]


def _friendly_bytes(value: float) -> str:
    return friendly_bytes(value)


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
        """Format a difference in human units with its sign (``"+1.20s"``, ``"−350 MiB"``).

        A difference that is zero in the shown unit has no sign (``"0µs"``, not ``"+0µs"``).
        """
        text = self.friendly(abs(difference))
        if not any(digit in text for digit in "123456789"):
            return text
        return ("−" if difference < 0 else "+") + text

    def cell(self, value: float | None, approximate: bool = False) -> str:
        """Format a figure as a text table's cell: ``"12.35s"``, ``"≈42.5 J"``, ``"—"``.

        :data:`~tasktrace.core.lines.NOT_MEASURED` where ``value`` is ``None``; else the figure in
        human units, after :data:`~tasktrace.core.lines.APPROXIMATE` where ``approximate``
        (a figure that is or counts an energy of a task shorter than its source's update period).
        """
        if value is None:
            return NOT_MEASURED
        return (APPROXIMATE if approximate else "") + self.friendly(value)

    def signed_cell(self, difference: float | None, approximate: bool = False) -> str:
        """Format a difference as a table cell (:meth:`signed`; marked as by :meth:`cell`)."""
        if difference is None:
            return NOT_MEASURED
        return (APPROXIMATE if approximate else "") + self.signed(difference)

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
        Measure(
            "cpu_energy", "cpu_energy_j", ENERGY_TITLES["cpu_energy_j"], False, friendly_joules
        ),
        Measure(
            "gpu_energy", "gpu_energy_j", ENERGY_TITLES["gpu_energy_j"], False, friendly_joules
        ),
        Measure(
            "system_energy",
            "system_energy_j",
            ENERGY_TITLES["system_energy_j"],
            False,
            friendly_joules,
        ),
        Measure(
            "dram_energy", "dram_energy_j", ENERGY_TITLES["dram_energy_j"], False, friendly_joules
        ),
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
