"""GPU energy from NVML (``nvidia-ml-py``, imported lazily as ``pynvml``; ``tasktrace[nvml]``).

Source of the numbers, per GPU visible to this process:

* ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded, Volta and newer;
  64-bit, does not wrap), read at task start and finish: source ``nvml-counter``;
* where that counter is unsupported (older GPUs), ``nvmlDeviceGetPowerUsage`` (milliwatts)
  sampled by the shared poller and integrated (trapezoid rule): source ``nvml-sampled``.

The numbers are device-wide: every process using the GPU contributes.

*Visible* GPUs follow ``CUDA_VISIBLE_DEVICES``: entries given as indices or (prefixes of) UUIDs;
parsing stops at the first invalid entry, as CUDA does. NVML enumerates devices in its own order,
not CUDA's, so devices are matched by UUID, and indices are mapped through PCI bus order (CUDA's
order under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; when torch has already initialised CUDA, torch's own
device UUIDs are used instead). MIG slices (``MIG-...`` entries, or a visible GPU in MIG mode)
cannot be measured: NVML's energy is per physical GPU, so the meter reports itself unavailable.
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

from tasktrace._forksafe import renew_after_fork
from tasktrace.meters._base import MeterReading, WarnOnce
from tasktrace.meters._poller import Poller, SampledEnergy, get_poller

__all__ = ["NVML_COUNTER_PERIOD_S", "NvmlMeter", "NvmlUnavailableError", "visible_gpus"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

NVML_COUNTER_PERIOD_S = 0.1
"""Assumed update period of NVML's total-energy counter, in seconds (NVIDIA does not document it).

A task shorter than this (or than the sampling interval, for sampled power) is flagged with
``gpu_energy_short_task``.
"""


class NvmlUnavailableError(Exception):
    """The visible GPUs cannot be measured (MIG, none visible); the message says why."""


@dataclass(frozen=True)
class _Gpu:
    handle: Any
    uuid: str
    pci_bus_id: str


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _list_gpus(nvml: Any) -> list[_Gpu]:
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId).lower()
        gpus.append(_Gpu(handle, uuid, bus_id))
    return sorted(gpus, key=lambda g: g.pci_bus_id)


def _torch_uuids() -> list[str] | None:
    """CUDA-ordered GPU UUIDs from torch, only if the program already initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        uuids = []
        for index in range(torch.cuda.device_count()):
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            uuids.append(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
    except Exception:  # noqa: BLE001 - any torch failure just means "use CUDA_VISIBLE_DEVICES"
        return None
    return uuids


def _is_mig_enabled(nvml: Any, gpu: _Gpu) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(gpu.handle)
    except nvml.NVMLError:  # not supported: not a MIG-capable GPU
        return False
    return bool(current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))


def visible_gpus(nvml: Any, cuda_visible_devices: str | None) -> list[Any]:
    """Return NVML handles of the GPUs this process can use.

    Args:
        nvml: The ``pynvml`` module (already initialised).
        cuda_visible_devices: The ``CUDA_VISIBLE_DEVICES`` value (``None``: unset, all GPUs).

    Returns:
        Handles, in CUDA order.

    Raises:
        NvmlUnavailableError: A MIG slice is visible, or a visible GPU is in MIG mode, or no GPU
            is visible.
        pynvml.NVMLError: NVML failed while listing devices.
    """
    gpus = _list_gpus(nvml)
    by_uuid = {g.uuid.lower(): g for g in gpus}
    torch_uuids = _torch_uuids()
    if torch_uuids is not None:
        chosen = [by_uuid[u.lower()] for u in torch_uuids if u.lower() in by_uuid]
    elif cuda_visible_devices is None:
        chosen = gpus
    else:
        chosen = []
        for raw in cuda_visible_devices.split(","):
            entry = raw.strip()
            if entry.upper().startswith("MIG-"):
                raise NvmlUnavailableError(
                    f"CUDA_VISIBLE_DEVICES names a MIG slice ({entry}); NVML measures energy per "
                    "physical GPU, not per slice"
                )
            gpu = _match_entry(entry, gpus)
            if gpu is None:  # CUDA ignores this entry and every one after it
                break
            if gpu not in chosen:
                chosen.append(gpu)
    mig = [g.uuid for g in chosen if _is_mig_enabled(nvml, g)]
    if mig:
        raise NvmlUnavailableError(
            f"GPU {mig[0]} is in MIG mode; NVML measures energy per physical GPU, not per slice"
        )
    if not chosen:
        raise NvmlUnavailableError("no GPU is visible to this process (CUDA_VISIBLE_DEVICES)")
    return [g.handle for g in chosen]


def _match_entry(entry: str, gpus: list[_Gpu]) -> _Gpu | None:
    if entry.isdigit():
        index = int(entry)
        if index >= len(gpus):
            return None
        if len(gpus) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            _warn(
                "nvml-order",
                "tasktrace: CUDA_VISIBLE_DEVICES gives GPU indices; mapping them in PCI bus "
                "order (set CUDA_DEVICE_ORDER=PCI_BUS_ID, or use GPU UUIDs, to be sure they "
                "match CUDA's)",
            )
        return gpus[index]
    prefix = entry.lower()
    if not prefix.startswith("gpu-"):
        prefix = "gpu-" + prefix
    matches = [g for g in gpus if g.uuid.lower().startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


class _CounterEnergy:
    """Energy of one GPU from the total-energy counter (mJ → J)."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle

    def value(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) / 1e3


class NvmlMeter:
    """GPU energy over a task, summed over the visible GPUs, from NVML.

    Reports ``gpu_power`` (joules, device-wide), ``gpu_energy_source`` (``"nvml-counter"``, or
    ``"nvml-sampled"`` if any GPU lacks the counter), ``gpu_energy_scope`` (``"device"``) and
    ``gpu_energy_short_task``. Thread-safe.

    Unavailable (``gpu_power`` stays ``None``) where ``pynvml`` is not installed, NVML cannot
    initialise (no driver), no GPU is visible, or a MIG slice is visible; the reason is logged
    once (a warning for MIG and for NVML errors on a machine with GPUs, debug otherwise).
    """

    name = "nvml"

    def __init__(
        self,
        *,
        poller: Poller | None = None,
        sample_interval_s: float = 0.1,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a meter; NVML is imported and initialised at :meth:`available`, not here.

        Args:
            poller: Poller that samples power where the counter is missing (default: shared).
            sample_interval_s: Seconds between power samples for integrated energy.
            environ: Where to read ``CUDA_VISIBLE_DEVICES`` (default ``os.environ``).
            clock: Monotonic clock in seconds used to integrate sampled power (for tests).
        """
        self._poller = poller
        self.sample_interval_s = sample_interval_s
        self._environ = environ if environ is not None else os.environ
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock')
        self._checked = False
        self._sources: list[_CounterEnergy | SampledEnergy] = []
        self._sampled: list[SampledEnergy] = []
        self._attached = False
        self.source: str | None = None
        """``"nvml-counter"`` or ``"nvml-sampled"`` once :meth:`available` succeeded."""
        self.reason: str | None = None
        """Why the meter is unavailable, once :meth:`available` returned ``False``."""

    def available(self) -> bool:
        """Import and initialise NVML and find the visible GPUs; never raises."""
        if self._checked:  # the hot path (every task start): no lock once checked
            return bool(self._sources)
        with self._lock:
            if not self._checked:
                self.reason = self._setup()
                if self.reason is not None:
                    self._sources, self._sampled = [], []
                self._checked = True
            return bool(self._sources)

    def _setup(self) -> str | None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            reason = "nvidia-ml-py is not installed (pip install 'tasktrace[nvml]')"
            _log.debug("tasktrace: gpu_power not measured: %s", reason)
            return reason
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            reason = f"NVML did not initialise ({e})"
            _log.debug("tasktrace: gpu_power not measured: %s", reason)
            return reason
        try:
            handles = visible_gpus(nvml, self._environ.get("CUDA_VISIBLE_DEVICES"))
            for handle in handles:
                self._sources.append(self._source(nvml, handle))
        except NvmlUnavailableError as e:
            _warn(f"nvml-unavailable:{e}", "tasktrace: gpu_power not measured: %s", e)
            return str(e)
        except nvml.NVMLError as e:
            _warn("nvml-error", "tasktrace: gpu_power not measured: NVML failed (%s)", e)
            return f"NVML failed ({e})"
        self.source = "nvml-sampled" if self._sampled else "nvml-counter"
        return None

    def _source(self, nvml: Any, handle: Any) -> _CounterEnergy | SampledEnergy:
        counter = _CounterEnergy(nvml, handle)
        try:
            counter.value()
        except nvml.NVMLError as e:
            if getattr(e, "value", None) != nvml.NVML_ERROR_NOT_SUPPORTED:
                raise
        else:
            return counter
        sampled = SampledEnergy(
            lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
            key=f"nvml-power:{_text(nvml.nvmlDeviceGetUUID(handle))}",
            clock=self._clock,
        )
        self._sampled.append(sampled)
        return sampled

    def start(self) -> tuple[float, ...] | None:
        """Read each visible GPU's energy (J); start the shared poller for sampled GPUs.

        Returns:
            The snapshot, or ``None`` if NVML failed (warned once).
        """
        if not self.available():
            return None
        if self._attached:
            return self._values()
        with self._lock:
            attach = not self._attached
            self._attached = True
        if attach:
            poller = self._poller if self._poller is not None else get_poller()
            for sampled in self._sampled:
                sampled.attach(poller, self.sample_interval_s)
        return self._values()

    def _values(self) -> tuple[float, ...] | None:
        try:
            return tuple(s.value() for s in self._sources)
        except Exception as e:  # noqa: BLE001 - pynvml.NVMLError; measurement never breaks a task
            _warn("nvml-read", "tasktrace: cannot read GPU energy from NVML (%s)", e)
            return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """Return the GPU energy since ``snapshot``, in joules.

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Seconds since the task started.
            final: Unused: NVML is cheap to read at every refresh.

        Returns:
            ``gpu_power``, ``gpu_energy_source``, ``gpu_energy_scope``, ``gpu_energy_short_task``;
            ``gpu_power`` is ``None`` where NVML could not be read.
        """
        del final
        if not self._sources:
            return {}
        energy_j: float | None = None
        if isinstance(snapshot, tuple):
            now = self._values()
            if now is not None:
                energy_j = sum(b - a for a, b in zip(snapshot, now, strict=True))
        period_s = self.sample_interval_s if self._sampled else NVML_COUNTER_PERIOD_S
        return {
            "gpu_power": energy_j,
            "gpu_energy_source": self.source if energy_j is not None else None,
            "gpu_energy_scope": "device" if energy_j is not None else None,
            "gpu_energy_short_task": elapsed_s < period_s,
        }
