"""GPU energy and process memory from NVML (``nvidia-ml-py``, imported lazily as ``pynvml``).

Install it with ``tasktrace[nvml]``. Source of the numbers, per GPU visible to this process
(:func:`~tasktrace.meters.nvml_devices.visible_devices`; MIG instances included):

* energy: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded, Volta and
  newer; 64-bit, never wraps), read at task start and finish and every
  ``counter_poll_interval_s`` by the shared poller: source ``nvml-counter``. Any step back is a
  glitch or a reset (:func:`~tasktrace.meters.poller.plausible_wrap` with a 2**64 range): the
  tasks spanning it get ``None``, with one warning. Where the counter is unsupported (older
  GPUs), ``nvmlDeviceGetPowerUsage`` (milliwatts) sampled by the shared poller and integrated
  (trapezoid rule): source ``nvml-sampled``. Energy is per physical GPU, every process on it
  contributing; a GPU in MIG mode is measured whole (scope ``device (shared by MIG instances)``)
  and counted once however many of its instances are visible.
* memory: this process's and its children's used GPU memory, sampled
  (:class:`~tasktrace.meters.gpu_memory.ProcessGpuMemory`); it fills ``peak_gpu_memory`` (source
  ``nvml-sampled``) only where torch's exact mark is not the source
  (:func:`~tasktrace.meters.gpu.torch_is_memory_source`).

With several visible devices, the per-device figures go into the task's extra data
``gpu_devices``: a list of ``{index, uuid, name, energy_j, peak_memory_bytes}`` in CUDA order.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.base import MeterReading
from tasktrace.meters.gpu import torch_is_memory_source
from tasktrace.meters.gpu_memory import MemoryScope, ProcessGpuMemory
from tasktrace.meters.nvml_devices import GpuDevice, NvmlUnavailableError, visible_devices
from tasktrace.meters.poller import ExtendedCounter, Poller, SampledEnergy, get_poller

__all__ = [
    "MIG_SCOPE",
    "NVML_COUNTER_PERIOD_S",
    "NVML_MAX_POWER_W",
    "NvmlMeter",
    "NvmlUnavailableError",
    "visible_devices",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

NVML_COUNTER_PERIOD_S = 0.1
"""Assumed update period of NVML's total-energy counter, in seconds (NVIDIA does not document it).

A task shorter than this (or than the sampling interval, for sampled power) is flagged with
``gpu_energy_short_task``.
"""

NVML_MAX_POWER_W = 2000.0
"""A generous bound of one GPU's power, in watts (the largest GPUs are rated 1,000-1,200 W).

Judges steps of the energy counter (:func:`~tasktrace.meters.poller.plausible_wrap`); the
counter's range is 2**64 mJ, so no step back is ever a wrap.
"""

MIG_SCOPE = "device (shared by MIG instances)"
"""``gpu_energy_scope`` where a visible GPU is in MIG mode: its whole energy, every instance's."""

_EnergySource = ExtendedCounter | SampledEnergy


@dataclass(frozen=True)
class _Snapshot:
    torch_at_start: bool
    energy: tuple[tuple[int, float] | None, ...] | None  # per physical GPU: (glitches, J)
    memory: MemoryScope | None


class NvmlMeter:
    """GPU energy and process memory over a task, from NVML (see the module docstring).

    Reports ``gpu_power`` (joules, summed over the visible physical GPUs), ``gpu_energy_source``
    (``"nvml-counter"``, or ``"nvml-sampled"`` if any GPU lacks the counter),
    ``gpu_energy_scope`` (``"device"``, or :data:`MIG_SCOPE`), ``gpu_energy_short_task``;
    ``peak_gpu_memory`` (bytes) and ``peak_gpu_memory_source`` (``"nvml-sampled"``) where torch
    is not the source; and ``gpu_devices`` with several visible devices. Thread-safe.

    Unavailable where ``pynvml`` is not installed, NVML cannot initialise (no driver), no GPU is
    visible, or no visible GPU gives energy or process memory; :attr:`reason` says why.
    """

    name = "nvml"

    def __init__(
        self,
        *,
        poller: Poller | None = None,
        sample_interval_s: float = 0.1,
        counter_poll_interval_s: float = 1.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a meter; NVML is imported and initialised at :meth:`available`, not here.

        Args:
            poller: The poller for background reads (default: the process's shared one).
            sample_interval_s: Seconds between power samples (GPUs without the energy counter)
                and between process-memory samples.
            counter_poll_interval_s: Seconds between background reads of the energy counters.
            environ: Where to read ``CUDA_VISIBLE_DEVICES`` (default ``os.environ``).
            clock: Monotonic clock in seconds, to integrate power and judge counter steps.
        """
        self._poller = poller
        self.sample_interval_s = sample_interval_s
        self.counter_poll_interval_s = counter_poll_interval_s
        self._environ = environ if environ is not None else os.environ
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._checked = False
        self._attached = False
        self.devices: list[GpuDevice] = []
        """The visible devices, in CUDA order, once :meth:`available` succeeded."""
        self._gpu_uuids: list[str] = []  # physical GPUs, in order of first appearance
        self._energy: list[_EnergySource | None] = []  # per physical GPU; None: no energy
        self._memory: ProcessGpuMemory | None = None
        self.source: str | None = None
        """``"nvml-counter"`` or ``"nvml-sampled"`` once energy is measurable."""
        self.reason: str | None = None
        """Why the meter is unavailable, once :meth:`available` returned ``False``."""
        self.reason_is_notable = False
        """Whether :attr:`reason` deserves a warning where nobody asked for this meter by name
        (NVML failed on a machine with GPUs), rather than a debug message (no driver)."""

    def available(self) -> bool:
        """Import and initialise NVML and find the visible devices; never raises."""
        if self._checked:  # the hot path (every task start): no lock once checked
            return bool(self.devices)
        with self._lock:
            if not self._checked:
                self._checked = True
                reason: str | None = "NVML set-up raised"
                try:
                    reason = self._setup()
                finally:  # a broken pynvml may raise anything: leave nothing half set up
                    self.reason = reason
                    if reason is not None:
                        self.devices, self._gpu_uuids, self._energy = [], [], []
                        self._memory = None
            return bool(self.devices)

    def _setup(self) -> str | None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return "nvidia-ml-py is not installed (pip install 'tasktrace[nvml]')"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            return f"NVML did not initialise ({e}): no NVIDIA driver, or no NVIDIA GPU, here"
        try:
            self.devices = visible_devices(nvml, self._environ.get("CUDA_VISIBLE_DEVICES"))
            for device in self.devices:
                if device.gpu_uuid not in self._gpu_uuids:
                    self._gpu_uuids.append(device.gpu_uuid)
                    self._energy.append(self._energy_source(nvml, device))
            memory = ProcessGpuMemory(nvml, self.devices)
            self._memory = memory if memory.check() else None
        except NvmlUnavailableError as e:
            return str(e)
        except nvml.NVMLError as e:
            self.reason_is_notable = True
            return f"NVML failed ({e})"
        if all(source is None for source in self._energy) and self._memory is None:
            self.reason_is_notable = True
            return "NVML gives neither energy nor process memory for the visible GPUs"
        sampled = any(isinstance(s, SampledEnergy) for s in self._energy)
        if any(s is not None for s in self._energy):
            self.source = "nvml-sampled" if sampled else "nvml-counter"
        return None

    def _energy_source(self, nvml: Any, device: GpuDevice) -> _EnergySource | None:
        handle = device.energy_handle
        try:
            return ExtendedCounter(
                lambda: int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
                2**64,
                f"nvml-energy:{device.gpu_uuid}",
                units_per_j=1e3,
                max_power_w=NVML_MAX_POWER_W,
                clock=self._clock,
            )
        except nvml.NVMLError_NotSupported:
            pass
        try:
            return SampledEnergy(
                lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                key=f"nvml-power:{device.gpu_uuid}",
                clock=self._clock,
            )
        except nvml.NVMLError_NotSupported:
            _warn(
                f"no-energy:{device.gpu_uuid}",
                "tasktrace: GPU %s has neither NVML's energy counter nor its power reading; "
                "gpu_power is None",
                device.gpu_uuid,
            )
            return None

    def _attach(self) -> None:
        with self._lock:
            if self._attached:
                return
            self._attached = True
        poller = self._poller if self._poller is not None else get_poller()
        for source in self._energy:
            if isinstance(source, ExtendedCounter):
                source.attach(poller, self.counter_poll_interval_s)
            elif source is not None:
                source.attach(poller, self.sample_interval_s)
        if self._memory is not None:
            poller.register("nvml-memory", self._memory.sample, self.sample_interval_s)

    def start(self) -> _Snapshot | None:
        """Read each GPU's energy and open a memory scope; start the poller on first use.

        Returns:
            The snapshot (its energy ``None`` if NVML failed, warned once), or ``None`` where
            the meter is unavailable.
        """
        if not self.available():
            return None
        if not self._attached:
            self._attach()
        memory = self._memory
        return _Snapshot(
            "torch" in sys.modules,
            self._energy_values(),
            memory.open() if memory is not None else None,
        )

    def _energy_values(self) -> tuple[tuple[int, float] | None, ...] | None:
        try:
            return tuple(_joules(source) for source in self._energy)
        except Exception as e:  # noqa: BLE001 - pynvml.NVMLError; measurement never breaks a task
            _warn("nvml-read", "tasktrace: cannot read GPU energy from NVML (%s)", e)
            return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """Return the GPU energy (J) and peak process memory (bytes) since ``snapshot``.

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Seconds since the task started.
            final: Whether the task is finishing (closes its memory scope).

        Returns:
            The fields listed in the class docstring; energy is ``None`` where NVML could not
            be read or a counter glitched since the start, memory ``None`` where none of our
            processes was seen on a GPU.
        """
        if not isinstance(snapshot, _Snapshot):
            return {}
        out: dict[str, object] = {}
        per_gpu = self._energy_deltas(snapshot)
        if any(source is not None for source in self._energy):
            energy_j = None if None in per_gpu else sum(per_gpu)  # type: ignore[arg-type]
            period_s = (
                self.sample_interval_s if self.source == "nvml-sampled" else (NVML_COUNTER_PERIOD_S)
            )
            scope = MIG_SCOPE if any(d.mig for d in self.devices) else "device"
            out["gpu_power"] = energy_j
            out["gpu_energy_source"] = self.source if energy_j is not None else None
            out["gpu_energy_scope"] = scope if energy_j is not None else None
            out["gpu_energy_short_task"] = elapsed_s < period_s
        peaks: tuple[int | None, ...] = (None,) * (len(self.devices) + 1)
        if self._memory is not None and snapshot.memory is not None:
            peaks = self._memory.peaks(snapshot.memory, close=final)
            if not torch_is_memory_source(snapshot.torch_at_start):
                out["peak_gpu_memory"] = peaks[-1]
                out["peak_gpu_memory_source"] = "nvml-sampled" if peaks[-1] is not None else None
        if len(self.devices) > 1:
            out["gpu_devices"] = [
                {
                    "index": device.index,
                    "uuid": device.uuid,
                    "name": device.name,
                    "energy_j": per_gpu[self._gpu_uuids.index(device.gpu_uuid)],
                    "peak_memory_bytes": peaks[i],
                }
                for i, device in enumerate(self.devices)
            ]
        return out

    def _energy_deltas(self, snapshot: _Snapshot) -> list[float | None]:
        before = snapshot.energy
        now = self._energy_values() if before is not None else None
        if before is None or now is None:
            return [None] * len(self._energy)
        return [
            None if b is None or n is None or b[0] != n[0] else n[1] - b[1]
            for b, n in zip(before, now, strict=True)
        ]


def _joules(source: _EnergySource | None) -> tuple[int, float] | None:
    """``(glitches, joules so far)`` of one GPU's energy source; ``None`` for no source."""
    if source is None:
        return None
    if isinstance(source, ExtendedCounter):
        glitches, millijoules = source.reading()
        return glitches, millijoules / 1e3
    return 0, source.value()
