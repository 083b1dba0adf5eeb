"""The meter protocol: how a source of measurements plugs into a task.

A *meter* measures one thing (CPU energy, GPU memory, ...) over the life of a task. It knows
nothing of spans or files: the task façade calls :meth:`Meter.start` when the task starts and
:meth:`Meter.read` when it finishes (and at each refresh while it runs), and writes the returned
values into the task's fields. The façade turns those into span attributes.

Meters never raise into user code: a meter that cannot measure returns ``None`` for its values,
never 0, and warns once (see :class:`WarnOnce`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from tasktrace._forksafe import renew_after_fork

__all__ = ["Meter", "MeterReading", "WarnOnce"]

MeterReading = Mapping[str, Any]
"""Values a meter reports, keyed by :class:`tasktrace.Task` field name.

Seed fields (``cpu_power``, ``gpu_power``, ``system_power``, ``peak_gpu_memory``) and tasktrace
fields (for example ``cpu_energy_source``) may appear. A value of ``None`` means "could not be
measured"; a key that is absent means "this meter does not speak to that field".
"""


@runtime_checkable
class Meter(Protocol):
    """A source of measurements over a task's life.

    Implementations must be thread-safe: one meter instance serves every task in the process, in
    every thread. ``start`` and ``read`` run on the task's hot path, so they must be cheap (read a
    counter, not sleep or query a server) unless the meter is only used at finish.
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


class WarnOnce:
    """Log a warning the first time for each key, then stay quiet (thread-safe)."""

    def __init__(self, logger: logging.Logger) -> None:
        """Create a warner logging to ``logger``."""
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock')

    def __call__(self, key: str, message: str, *args: object) -> bool:
        """Warn with ``message % args`` unless ``key`` already warned; return whether it warned."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.warning(message, *args)
        return True

    def reset(self) -> None:
        """Forget which keys have warned (for tests)."""
        with self._lock:
            self._seen.clear()
