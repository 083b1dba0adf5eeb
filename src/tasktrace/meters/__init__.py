"""Meters: sources of measurements, registered once per process.

The built-in process meters (CPU time, RSS, CUDA peak memory) are read directly by the task
façade; every other meter implements :class:`Meter` and is registered here: by default the
energy meters (:func:`tasktrace.meters.energy.default_energy_meters`, NVML's GPU process memory
with them) and :class:`~tasktrace.meters.gpu.TorchGpuMemoryMeter`, which names torch's peak as
the source of ``peak_gpu_memory``. The façade reads only the meters that said they are
:meth:`~Meter.available`; each one that is not is reported once (:func:`meter_available`).
"""

from __future__ import annotations

import sys
import threading

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import get_settings
from tasktrace.core.warn import WarnOnce
from tasktrace.meters import energy, gpu
from tasktrace.meters.base import Meter, MeterReading, meter_available

__all__ = ["Meter", "MeterReading", "WarnOnce", "active_meters", "register_meter", "reset_meters"]

_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_lock")
_meters: tuple[Meter, ...] | None = None


def _default_meters() -> list[Meter]:
    # The energy meters (NVML's process memory with them), then the source of torch's GPU peak.
    # Built here, when the first task starts: reading sysfs/NVML is only wanted then.
    return [*energy.default_energy_meters(get_settings()), gpu.TorchGpuMemoryMeter()]


def active_meters() -> tuple[Meter, ...]:
    """Return the registered, available meters (built from settings on first use; thread-safe)."""
    global _meters  # noqa: PLW0603 - one registry per process
    meters = _meters
    if meters is None:
        with _lock:
            if _meters is None:
                _meters = tuple(m for m in _default_meters() if meter_available(m))
            meters = _meters
    return meters


def register_meter(meter: Meter) -> bool:
    """Add ``meter`` to every task started from now on, if it is available.

    Args:
        meter: An object implementing :class:`Meter`.

    Returns:
        Whether the meter was added (``False`` when it reports itself unavailable).

    Raises:
        TypeError: ``meter`` does not implement the :class:`Meter` protocol.
    """
    if not isinstance(meter, Meter):
        raise TypeError(f"meter {meter!r} does not implement tasktrace.meters.Meter")
    if not meter_available(meter):
        return False
    current = active_meters()
    global _meters  # noqa: PLW0603 - see active_meters
    with _lock:
        _meters = (*current, meter)
    return True


def reset_meters(meters: list[Meter] | None = None) -> None:
    """Replace the registered meters (``None``: rebuild the defaults from settings on next use)."""
    global _meters  # noqa: PLW0603 - see active_meters
    with _lock:
        _meters = None if meters is None else tuple(m for m in meters if meter_available(m))
