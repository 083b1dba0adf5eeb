"""The energy meters installed by default, combined so that each scope has one value and source.

Scopes are ``system``, ``cpu`` and ``gpu``; each fills ``<scope>_power`` (joules, the seed's
field) and ``<scope>_energy_source``, ``<scope>_energy_scope``, ``<scope>_energy_short_task``.
Several meters may speak to one scope (Prometheus and RAPL both to ``cpu``): :class:`EnergyMeter`
asks them in priority order and, per scope, keeps the fields of the first one with a value.
Prometheus comes first, so its value for a scope wins over the local meter's; where its query
fails (or before the finish, when it is not queried) the local meter's value is used.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import BUILTIN_METERS, Settings
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.base import LateReading, Meter, MeterReading, meter_available, read_final
from tasktrace.meters.nvml import NvmlMeter
from tasktrace.meters.prometheus import PrometheusMeter
from tasktrace.meters.prometheus_setup import prometheus_setup_problem
from tasktrace.meters.rapl import RaplMeter

__all__ = [
    "ENERGY_SCOPES",
    "EnergyMeter",
    "default_energy_meters",
    "merge_readings",
    "scope_fields",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

ENERGY_SCOPES = ("system", "cpu", "gpu")
"""Scopes of the seed's energy fields (``system_power``, ``cpu_power``, ``gpu_power``)."""


def scope_fields(scope: str) -> tuple[str, str, str, str]:
    """Return the task fields of one scope: energy (J), source, scope, short-task flag."""
    return (
        f"{scope}_power",
        f"{scope}_energy_source",
        f"{scope}_energy_scope",
        f"{scope}_energy_short_task",
    )


class EnergyMeter:
    """Several energy meters read as one, per-scope first-with-a-value (priority order).

    For each scope, the first meter (in the order given) whose reading has a non-``None``
    ``<scope>_power`` provides all four fields of that scope; if none has a value, the first
    meter that speaks to the scope provides them (energy ``None``). Other fields (such as
    ``dram_energy_j``) take the first non-``None`` value. A child meter that raises is treated
    as having no value and warned about once. Thread-safe if the children are.
    """

    name = "energy"

    def __init__(self, meters: Sequence[Meter]) -> None:
        """Combine ``meters``, highest priority first."""
        self.meters = list(meters)
        self._active: list[Meter] | None = None
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    @property
    def active(self) -> list[Meter]:
        """The children that are available (checked once)."""
        active = self._active
        if active is not None:  # the hot path: checked once, then read without the lock
            return active
        with self._lock:
            if self._active is None:
                self._active = [m for m in self.meters if meter_available(m)]
            return self._active

    def available(self) -> bool:
        """Return whether any child meter is available."""
        return bool(self.active)

    def start(self) -> tuple[object, ...]:
        """Start every available child; return their snapshots in order."""
        snapshots = []
        for meter in self.active:
            try:
                snapshots.append(meter.start())
            except Exception:  # noqa: BLE001, PERF203 - a broken meter must not break the task
                _warn(f"start:{meter.name}", "tasktrace: meter %s failed to start", meter.name)
                snapshots.append(None)
        return tuple(snapshots)

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """Read every child and merge per scope (see the class docstring).

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Seconds since the task started.
            final: Whether the task is finishing (Prometheus is queried only then).

        Returns:
            The merged fields.
        """
        snapshots = snapshot if isinstance(snapshot, tuple) else ()
        readings: list[MeterReading] = []
        for meter, snap in zip(self.active, snapshots, strict=False):
            try:
                readings.append(meter.read(snap, elapsed_s, final=final))
            except Exception:  # noqa: BLE001, PERF203 - see start()
                _warn(f"read:{meter.name}", "tasktrace: meter %s failed to read", meter.name)
        return merge_readings(readings)

    def read_final(
        self, snapshot: object, elapsed_s: float, end_time_s: float
    ) -> tuple[MeterReading, LateReading | None]:
        """Return the final reading in two parts (see :func:`tasktrace.meters.base.read_final`).

        Now: the children read now merged (the local meters; a scope Prometheus will answer
        for shows the local value, or nothing, until then). Late, where a child has a late
        part (Prometheus): every child's final reading merged by the usual rule, the late
        children's from their late part, the others' the ones taken now.

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Seconds since the task started.
            end_time_s: The task's end, Unix seconds.

        Returns:
            ``(merged reading now, late part or None)``.
        """
        snapshots = snapshot if isinstance(snapshot, tuple) else ()
        parts: list[tuple[MeterReading, LateReading | None]] = []
        for meter, snap in zip(self.active, snapshots, strict=False):
            try:
                parts.append(read_final(meter, snap, elapsed_s, end_time_s))
            except Exception:  # noqa: BLE001, PERF203 - see start()
                _warn(f"read:{meter.name}", "tasktrace: meter %s failed to read", meter.name)
                parts.append(({}, None))  # keeps parts in step with the meters
        now = merge_readings([reading for reading, _ in parts])
        if all(late is None for _, late in parts):
            return now, None
        return now, functools.partial(_merge_late, self.active, parts)


def _merge_late(
    meters: Sequence[Meter], parts: Sequence[tuple[MeterReading, LateReading | None]]
) -> dict[str, object]:
    """Merge the final readings of :meth:`EnergyMeter.read_final`, late parts run now."""
    readings: list[MeterReading] = []
    for meter, (reading, late) in zip(meters, parts, strict=False):
        if late is None:
            readings.append(reading)
            continue
        try:
            readings.append(late())
        except Exception:  # noqa: BLE001 - a broken meter must not break the task
            _warn(f"read:{meter.name}", "tasktrace: meter %s failed to read", meter.name)
    return merge_readings(readings)


def merge_readings(readings: Sequence[MeterReading]) -> dict[str, object]:
    """Merge readings given highest priority first (the rule of :class:`EnergyMeter`)."""
    out: dict[str, object] = {}
    grouped: set[str] = set()
    for scope in ENERGY_SCOPES:
        fields = scope_fields(scope)
        grouped.update(fields)
        speaking = [r for r in readings if fields[0] in r]
        if not speaking:
            continue
        winner = next((r for r in speaking if r[fields[0]] is not None), speaking[0])
        out.update({f: winner[f] for f in fields if f in winner})
    for reading in readings:
        for key, value in reading.items():
            if key not in grouped and out.get(key) is None:
                out[key] = value
    return out


def default_energy_meters(settings: Settings) -> list[Meter]:
    """Build the built-in energy meters that ``settings`` selects and this machine supports.

    Prometheus (where ``[prometheus] url`` is set and the current machine has ``power_queries``;
    where the settings mention Prometheus but leave it nothing to query, one warning says what
    is missing, see :mod:`tasktrace.meters.prometheus_setup`), then RAPL
    (``settings.energy.rapl_root``), then NVML, combined in one :class:`EnergyMeter` so that a
    Prometheus value for a scope wins over the local meter's.

    Args:
        settings: The process's settings; ``settings.meters`` (``None``: all) selects among
            ``"prometheus"``, ``"rapl"`` and ``"nvml"``.

    Returns:
        ``[EnergyMeter]`` if any selected meter is available, else ``[]``. Checking
        availability reads sysfs and initialises NVML (once).
    """
    selected = set(BUILTIN_METERS if settings.meters is None else settings.meters)
    for unknown in sorted(selected - set(BUILTIN_METERS)):
        _warn(
            f"unknown:{unknown}",
            "tasktrace: unknown meter %r in the meters setting (TASKTRACE_METERS); known: %s",
            unknown,
            ", ".join(BUILTIN_METERS),
        )
    meters: list[Meter] = []
    if "prometheus" in selected:
        machine = settings.current_machine
        prometheus = PrometheusMeter(
            settings.prometheus.url,
            machine.power_queries if machine is not None else {},
            settings.machine,
            timeout_s=settings.prometheus.timeout_s,
            retry_after_s=settings.prometheus.retry_after_s,
            scrape_interval_s=settings.prometheus.scrape_interval_s,
            setup_problem=prometheus_setup_problem(settings),
        )
        # Said once now (the first task), even beside an available RAPL or NVML meter.
        meter_available(prometheus, asked=settings.meters is not None)
        meters.append(prometheus)
    if "rapl" in selected:
        meters.append(
            RaplMeter(
                settings.energy.rapl_root,
                poll_interval_s=settings.energy.counter_poll_interval_s,
            )
        )
    if "nvml" in selected:
        meters.append(
            NvmlMeter(
                sample_interval_s=settings.energy.sample_interval_s,
                counter_poll_interval_s=settings.energy.counter_poll_interval_s,
            )
        )
    if settings.meters is not None:  # asked for by name: say (once) which cannot measure here
        for meter in meters:
            meter_available(meter, asked=True)
    combined = EnergyMeter(meters)
    return [combined] if combined.available() else []
