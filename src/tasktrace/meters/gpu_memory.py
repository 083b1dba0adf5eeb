"""GPU memory used by this process and its children, sampled from NVML (no PyTorch needed).

Source: ``nvmlDeviceGetComputeRunningProcesses`` on each visible device (on each MIG instance
for MIG), whose entries carry a ``pid`` and ``usedGpuMemory`` (bytes; ``None`` where NVML does
not expose it). *Ours* are this process (``os.getpid()`` at sample time, so a forked child
measures itself) and its descendants at sample time: a GPU process whose chain of parents
(``psutil.Process(pid).parents()``) reaches this process, so a CUDA subprocess the task runs
and waits for is counted while it runs. A device's value is the sum over our entries.

The shared poller samples every ``sample_interval_s`` (0.1 s); a task's peak is the largest
sample taken while it ran, so allocations that come and go between two samples are not seen,
and a task shorter than the interval gets the level last sampled. Scopes follow the same
nested-scope rule as the RSS high-water mark (:mod:`tasktrace.meters.process`): every sample
counts for every task open at that moment, so a parent's peak is at least each child's.

Where NVML gives PIDs from another PID namespace (a container without the host's PID
namespace), no entry is ours and the value is ``None``, never 0.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import psutil

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.nvml_devices import GpuDevice

__all__ = ["MemoryScope", "ProcessGpuMemory"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

_UNKNOWN = -1
"""A device where one of our processes runs but NVML gives no figure for it."""


class MemoryScope:
    """One task's view of the sampled memory.

    Attributes:
        peaks: Per device, then the total: the largest value sampled while the scope was open
            (bytes, ``None`` where none of our processes was seen); ``None`` before any sample.
    """

    __slots__ = ("peaks",)

    def __init__(self) -> None:
        """Create a scope that has seen no sample yet."""
        self.peaks: tuple[int | None, ...] | None = None


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _is_ours(pid: int, me: int) -> bool:
    if pid == me:
        return True
    try:
        return any(parent.pid == me for parent in psutil.Process(pid).parents())
    except psutil.Error:  # gone, or another PID namespace's number
        return False


class ProcessGpuMemory:
    """Samples our used GPU memory per device and keeps each open task's peak.

    :meth:`sample` runs in the poller thread (serialised by a lock); :meth:`open` and
    :meth:`peaks` run on tasks' hot paths and take no lock (set operations are atomic under the
    GIL, and a scope's ``peaks`` is replaced whole).
    """

    def __init__(self, nvml: Any, devices: Sequence[GpuDevice]) -> None:
        """Create a sampler over ``devices`` (from :func:`~.nvml_devices.visible_devices`).

        Args:
            nvml: The ``pynvml`` module (already initialised).
            devices: The visible devices, in CUDA order.
        """
        self._nvml = nvml
        self.devices = list(devices)
        self._open: set[MemoryScope] = set()
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self.supported = [True] * len(self.devices)
        """Per device: whether NVML lists its processes (``False`` after NOT_SUPPORTED; the
        device's value, and the total, are then ``None``)."""
        self.latest: tuple[int | None, ...] = (None,) * (len(self.devices) + 1)
        """The last sample: bytes per device, then the total (``None``: none of ours seen)."""
        self._known: dict[int, bool] = {}  # whether each PID of the last sample is ours
        self._me = -1

    def check(self) -> bool:
        """Take a first sample; return whether any device's processes can be listed."""
        self.sample()
        return any(self.supported)

    def sample(self) -> tuple[int | None, ...]:
        """Sample every device and fold the values into every open scope; return the sample.

        Returns:
            Bytes per device, then the total over devices: ``None`` where none of our
            processes was seen (the total also where a device's figure is unknown).
        """
        with self._lock:
            me = os.getpid()
            if me != self._me:  # first sample, or a forked child: nothing known holds
                self._me, self._known = me, {}
            known: dict[int, bool] = {}
            values: list[int | None] = []
            total: int | None = None
            unknown = False
            for index, device in enumerate(self.devices):
                used = self._device_bytes(index, device, me, known)
                if used == _UNKNOWN:
                    unknown = True
                    values.append(None)
                    continue
                values.append(used)
                if used is not None:
                    total = used if total is None else total + used
            values.append(None if unknown else total)
            # Keep the answers for the PIDs still listed: walking parents is the costly part,
            # and a PID reused by another GPU process within one interval is not worth it.
            self._known = known
            sample = tuple(values)
            self.latest = sample
            for scope in list(self._open):  # copied under the GIL: add/discard need no lock
                peaks = scope.peaks
                scope.peaks = sample if peaks is None else tuple(map(_max, peaks, sample))
            return sample

    def _device_bytes(
        self, index: int, device: GpuDevice, me: int, known: dict[int, bool]
    ) -> int | None:
        if not self.supported[index]:
            return _UNKNOWN
        nvml = self._nvml
        used = 0
        seen = False
        for handle in device.memory_handles:
            try:
                processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except nvml.NVMLError as e:
                if isinstance(e, nvml.NVMLError_NotSupported):
                    self.supported[index] = False
                _warn(
                    f"processes:{device.uuid}:{type(e).__name__}",
                    "tasktrace: NVML cannot list the processes on %s (%s); its memory is None",
                    device.uuid,
                    e,
                )
                return _UNKNOWN
            for process in processes:
                pid = int(process.pid)
                ours = known.get(pid)
                if ours is None:
                    ours = self._known.get(pid)
                    known[pid] = ours = _is_ours(pid, me) if ours is None else ours
                if not ours:
                    continue
                if process.usedGpuMemory is None:
                    _warn(
                        f"used:{device.uuid}",
                        "tasktrace: NVML does not give the memory used by process %d on %s "
                        "(NVML_VALUE_NOT_AVAILABLE); peak_gpu_memory is None there",
                        pid,
                        device.uuid,
                    )
                    return _UNKNOWN
                used += int(process.usedGpuMemory)
                seen = True
        return used if seen else None

    def open(self) -> MemoryScope:
        """Open a task's scope: every later sample counts for it until it is closed."""
        scope = MemoryScope()
        self._open.add(scope)
        return scope

    def peaks(self, scope: MemoryScope, *, close: bool = False) -> tuple[int | None, ...]:
        """Return the scope's peaks: per device, then the total (bytes or ``None``).

        A scope that saw no sample (a task shorter than the interval) gets the last sample.

        Args:
            scope: A scope from :meth:`open`.
            close: Also close the scope (no later sample counts for it).
        """
        if close:
            self._open.discard(scope)
        peaks = scope.peaks
        return self.latest if peaks is None else peaks
