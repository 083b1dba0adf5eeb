"""Energy in total and emissions of a task: nothing counted twice, nothing made up.

Energy in total (:func:`total_energy_j`): the system energy where it was measured (it already
covers the CPUs, GPUs and memory), else the sum of the CPU, GPU and DRAM energy that were
measured (DRAM left out when the CPU figure is RAPL's ``platform`` domain, which includes it).

Emissions (:func:`emissions_g`): energy in kWh (1 kWh = 3.6 MJ, :data:`JOULES_PER_KWH`) times
the machine's carbon intensity in g CO₂e per kWh (:class:`CarbonIntensity`, from the settings'
``[machines.NAME] carbon_intensity_g_per_kwh`` or one override).

These are public as :mod:`tasktrace.formats.measures`' names too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import Settings, get_settings

__all__ = ["JOULES_PER_KWH", "CarbonIntensity", "emissions_g", "total_energy_j"]

JOULES_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour (1 kWh = 1000 W × 3600 s = 3.6 MJ)."""


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
