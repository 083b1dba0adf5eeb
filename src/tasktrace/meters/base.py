"""The meter protocol: how a source of measurements plugs into a task.

A *meter* measures one thing (CPU energy, GPU memory, ...) over the life of a task. It knows
nothing of spans or files: the task façade calls :meth:`Meter.start` when the task starts and
:meth:`Meter.read` when it finishes (and at each refresh while it runs), and writes the returned
values into the task's fields. The façade turns those into span attributes.

Meters never raise into user code: a meter that cannot measure returns ``None`` for its values,
never 0, and warns once (see :class:`~tasktrace.core.warn.WarnOnce`).

A meter whose final reading waits on something slow (a Prometheus query, one network round
trip per scope) has a ``read_final(snapshot, elapsed_s, end_time_s)`` method besides
:meth:`Meter.read`: it returns what it measured now and a *late* part, a function that gives
the complete final reading later, evaluated as of the task's end (``end_time_s``), so that it
may run after the task's figures are taken, off the task's path (see :func:`read_final`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tasktrace.core.warn import WarnOnce

__all__ = [
    "LateReading",
    "Meter",
    "MeterCheck",
    "MeterReading",
    "meter_available",
    "meter_checks",
    "read_final",
]

_log = logging.getLogger("tasktrace.meters")

MeterReading = Mapping[str, Any]
"""Values a meter reports, keyed by :class:`tasktrace.Task` field name.

Seed fields (``cpu_power``, ``gpu_power``, ``system_power``, ``peak_gpu_memory``) and tasktrace
fields (for example ``cpu_energy_source``) may appear. A value of ``None`` means "could not be
measured"; a key that is absent means "this meter does not speak to that field".
"""


LateReading = Callable[[], MeterReading]
"""The late part of a final reading: called once, off the task's path (any thread), it returns
the complete final reading, which replaces the part read at the finish. Must not raise; may
wait (a network query, bounded by the meter's timeout)."""


@runtime_checkable
class Meter(Protocol):
    """A source of measurements over a task's life.

    Implementations must be thread-safe: one meter instance serves every task in the process, in
    every thread. ``start`` and ``read`` run on the task's hot path, so they must be cheap (read a
    counter, not sleep or query a server). A meter whose final reading waits on a server
    defines ``read_final`` too (see :func:`read_final`): its slow part then runs after the
    task's figures are taken, and off the path of a task nested in a running one.
    """

    name: str
    """Short identifier used in settings and warnings (for example ``"rapl"``)."""

    def available(self) -> bool:
        """Return whether this meter can measure on this machine.

        Called once when the meter is installed; an unavailable meter is left off the hot path.
        Must not raise.
        """
        ...

    def start(self) -> object:
        """Take the starting snapshot for one task.

        Returns:
            An opaque snapshot handed back to :meth:`read`. ``None`` is a valid snapshot.
        """
        ...

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """Return the values measured since ``snapshot``.

        Args:
            snapshot: What :meth:`start` returned for this task.
            elapsed_s: Seconds since the task started (``time.perf_counter``).
            final: ``True`` at the task's finish, ``False`` for a running refresh.

        Returns:
            Field name → value. Values that cannot be measured are ``None``.
        """
        ...


def read_final(
    meter: Meter, snapshot: object, elapsed_s: float, end_time_s: float
) -> tuple[MeterReading, LateReading | None]:
    """Take a meter's final reading: what it gives now, and its late part if it has one.

    A meter with a ``read_final`` method (see the module docstring) is asked through it; any
    other gives ``meter.read(snapshot, elapsed_s, final=True)`` and no late part.

    Args:
        meter: The meter.
        snapshot: What its ``start`` returned for the task.
        elapsed_s: The task's duration, seconds (``time.perf_counter``).
        end_time_s: The task's end, Unix seconds (its ``finish_time``), taken before any meter
            is read.

    Returns:
        ``(reading now, late part or None)``.

    Raises:
        Exception: Whatever the meter raises (the caller warns and goes on).
    """
    split = getattr(meter, "read_final", None)
    if split is None:
        return meter.read(snapshot, elapsed_s, final=True), None
    return split(snapshot, elapsed_s, end_time_s)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class MeterCheck:
    """The outcome of one meter's availability check (:func:`meter_available`).

    Attributes:
        name: The meter's :attr:`Meter.name` (``"rapl"``, ``"nvml"``, ``"prometheus"``, ...).
        available: Whether the meter can measure on this machine.
        reason: Why it cannot (the meter's ``reason`` attribute, which names the fix where there
            is one: the RAPL permission, ``pip install 'tasktrace[nvml]'``, the Prometheus
            setting); ``None`` when available.
    """

    name: str
    available: bool
    reason: str | None = None


_warn_unavailable = WarnOnce(_log)
_checks: dict[str, MeterCheck] = {}


def meter_checks() -> dict[str, MeterCheck]:
    """Return the latest availability check of each meter checked in this process, by name.

    Filled by :func:`meter_available`, so it holds the meters of the tasks started so far (the
    built-in energy meters are checked when the first task starts). A copy; thread-safe.
    """
    return dict(_checks)


def meter_available(meter: Meter, *, asked: bool = False) -> bool:
    """Check whether ``meter`` can measure here, warning at most once per meter name.

    The one place that says why a meter is left out, so that each meter gets at most one
    warning per process, however often the meters are rebuilt (settings reloaded), and that
    records each outcome for :func:`meter_checks` (``tasktrace run`` and ``show`` say which
    meters measured and why the others did not):

    * ``available()`` raising (it must not): a warning naming the meter and the error;
    * ``available()`` false and the meter asked for by name (``TASKTRACE_METERS``): a warning
      with the meter's ``reason`` attribute, if it has one;
    * false and not asked for: a warning only where the meter's ``reason_is_notable`` attribute
      is true (RAPL present but unreadable, say), else a debug message (no GPU, no RAPL).

    Args:
        meter: The meter to check.
        asked: Whether the user named this meter in the meters setting.

    Returns:
        Whether the meter is available. Never raises.
    """
    name = getattr(meter, "name", type(meter).__name__)
    try:
        if meter.available():
            _checks[name] = MeterCheck(name, available=True)
            return True
    except Exception as e:  # noqa: BLE001 - a broken meter is an unavailable one, said once
        _checks[name] = MeterCheck(name, False, f"its availability check raised {type(e).__name__}")
        _warn_unavailable(
            f"unavailable:{name}",
            "tasktrace: meter %r failed its availability check (%r); its values stay None",
            name,
            e,
        )
        return False
    reason = getattr(meter, "reason", None) or "it gave no reason"
    _checks[name] = MeterCheck(name, available=False, reason=reason)
    if asked:
        _warn_unavailable(
            f"unavailable:{name}",
            "tasktrace: meter %r was asked for (meters setting, TASKTRACE_METERS) but cannot "
            "measure on this machine: %s; its values stay None",
            name,
            reason,
        )
    elif getattr(meter, "reason_is_notable", False):
        _warn_unavailable(
            f"unavailable:{name}",
            "tasktrace: meter %r cannot measure on this machine: %s; its values stay None",
            name,
            reason,
        )
    else:
        _log.debug("tasktrace: meter %r cannot measure here: %s", name, reason)
    return False
