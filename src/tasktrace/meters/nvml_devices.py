"""The GPUs (and MIG instances) this process can use, as NVML sees them.

*Visible* devices follow ``CUDA_VISIBLE_DEVICES``: entries given as indices, (prefixes of) GPU
UUIDs, or (prefixes of) MIG instance UUIDs (``MIG-...``); parsing stops at the first invalid
entry, as CUDA does. NVML enumerates GPUs in its own order, not CUDA's, so devices are matched by
UUID, and indices are mapped through PCI bus order (CUDA's order under
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; when torch has already initialised CUDA, torch's own device
UUIDs are used instead).

MIG: NVML's energy counter and power are per physical GPU, so a MIG instance's energy is its
whole GPU's (scope "device (shared by MIG instances)"). Process memory is listed per MIG
instance (``nvmlDeviceGetComputeRunningProcesses`` on the MIG device handle); a GPU in MIG mode
named as a whole (its index or GPU UUID, or nothing set) lists the processes of every instance.

Source of each item: ``nvmlDeviceGetCount`` / ``nvmlDeviceGetHandleByIndex`` (GPUs),
``nvmlDeviceGetUUID``, ``nvmlDeviceGetName``, ``nvmlDeviceGetPciInfo`` (``busId``),
``nvmlDeviceGetMigMode``, ``nvmlDeviceGetMaxMigDeviceCount`` and
``nvmlDeviceGetMigDeviceHandleByIndex`` (MIG instances).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from tasktrace.core.warn import WarnOnce

__all__ = ["GpuDevice", "NvmlUnavailableError", "visible_devices"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


class NvmlUnavailableError(Exception):
    """No GPU is visible to this process (``CUDA_VISIBLE_DEVICES``); the message says so."""


@dataclass(frozen=True)
class GpuDevice:
    """One device this process can use: a whole GPU or a MIG instance.

    Attributes:
        index: The device's CUDA index in this process (its position among the visible devices).
        uuid: ``GPU-...`` for a whole GPU, ``MIG-...`` for a MIG instance.
        name: NVML's product name (``nvmlDeviceGetName``; a MIG instance's names its profile).
        gpu_uuid: UUID of the physical GPU: the device itself, or a MIG instance's parent.
        energy_handle: NVML handle of the physical GPU, whose energy counter and power are read.
        memory_handles: NVML handles whose compute processes are listed for memory: the GPU;
            every MIG instance of a GPU in MIG mode; or the MIG instance itself.
        mig: Whether the physical GPU is in MIG mode (its energy is shared by its instances).
    """

    index: int
    uuid: str
    name: str
    gpu_uuid: str
    energy_handle: Any
    memory_handles: tuple[Any, ...]
    mig: bool


@dataclass(frozen=True)
class _Gpu:
    handle: Any
    uuid: str
    name: str
    pci_bus_id: str
    mig: bool
    instances: tuple[tuple[Any, str, str], ...]  # (handle, uuid, name) of each MIG instance


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_instances(nvml: Any, handle: Any) -> tuple[tuple[Any, str, str], ...] | None:
    """MIG instances of a GPU in MIG mode, or ``None`` where MIG is off or unsupported."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:  # not supported: not a MIG-capable GPU
        return None
    if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return None
    instances = []
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:  # NVML_ERROR_NOT_FOUND: an empty slot
            continue
        instances.append(
            (mig, _text(nvml.nvmlDeviceGetUUID(mig)), _text(nvml.nvmlDeviceGetName(mig)))
        )
    return tuple(instances)


def _list_gpus(nvml: Any) -> list[_Gpu]:
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        instances = _mig_instances(nvml, handle)
        gpus.append(
            _Gpu(
                handle,
                _text(nvml.nvmlDeviceGetUUID(handle)),
                _text(nvml.nvmlDeviceGetName(handle)),
                _text(nvml.nvmlDeviceGetPciInfo(handle).busId).lower(),
                instances is not None,
                instances or (),
            )
        )
    return sorted(gpus, key=lambda g: g.pci_bus_id)


def _hex(uuid: str) -> str:
    """Return a UUID without its ``GPU-`` / ``MIG-`` prefix, lower case (torch prints neither)."""
    lowered = uuid.lower()
    for prefix in ("gpu-", "mig-"):
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def _torch_uuids() -> list[str] | None:
    """CUDA-ordered device UUIDs from torch, only if the program already initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return [
            str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())
        ]
    except Exception:  # noqa: BLE001 - any torch failure just means "use CUDA_VISIBLE_DEVICES"
        return None


def _whole(gpu: _Gpu, index: int) -> GpuDevice:
    memory = tuple(h for h, _, _ in gpu.instances) if gpu.mig else (gpu.handle,)
    return GpuDevice(index, gpu.uuid, gpu.name, gpu.uuid, gpu.handle, memory, gpu.mig)


def _instance(gpu: _Gpu, instance: tuple[Any, str, str], index: int) -> GpuDevice:
    handle, uuid, name = instance
    return GpuDevice(index, uuid, name, gpu.uuid, gpu.handle, (handle,), True)


def _match(entry: str, gpus: list[_Gpu]) -> tuple[_Gpu, tuple[Any, str, str] | None] | None:
    """Return the GPU (and MIG instance) one ``CUDA_VISIBLE_DEVICES`` entry names, or None."""
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
        return gpus[index], None
    lowered = entry.lower()
    if lowered.startswith("mig-"):
        found = [(g, i) for g in gpus for i in g.instances if i[1].lower().startswith(lowered)]
        return found[0] if len(found) == 1 else None
    prefix = lowered if lowered.startswith("gpu-") else "gpu-" + lowered
    matches = [g for g in gpus if g.uuid.lower().startswith(prefix)]
    return (matches[0], None) if len(matches) == 1 else None


def visible_devices(nvml: Any, cuda_visible_devices: str | None) -> list[GpuDevice]:
    """Return the devices this process can use, in CUDA order.

    Args:
        nvml: The ``pynvml`` module (already initialised).
        cuda_visible_devices: The ``CUDA_VISIBLE_DEVICES`` value (``None``: unset, all GPUs).

    Returns:
        One :class:`GpuDevice` per visible GPU or MIG instance, without duplicates.

    Raises:
        NvmlUnavailableError: No device is visible.
        pynvml.NVMLError: NVML failed while listing devices.
    """
    gpus = _list_gpus(nvml)
    chosen: list[tuple[_Gpu, tuple[Any, str, str] | None]] = []
    torch_uuids = _torch_uuids()
    if torch_uuids is not None:
        for uuid in torch_uuids:
            wanted = _hex(uuid)
            for gpu in gpus:
                if _hex(gpu.uuid) == wanted:
                    chosen.append((gpu, None))
                chosen.extend((gpu, i) for i in gpu.instances if _hex(i[1]) == wanted)
    elif cuda_visible_devices is None:
        chosen = [(g, None) for g in gpus]
    else:
        for raw in cuda_visible_devices.split(","):
            found = _match(raw.strip(), gpus)
            if found is None:  # CUDA ignores this entry and every one after it
                break
            chosen.append(found)
    devices: list[GpuDevice] = []
    seen: set[str] = set()
    for gpu, instance in chosen:
        index = len(devices)
        device = _whole(gpu, index) if instance is None else _instance(gpu, instance, index)
        if device.uuid not in seen:
            seen.add(device.uuid)
            devices.append(device)
    if not devices:
        raise NvmlUnavailableError("no GPU is visible to this process (CUDA_VISIBLE_DEVICES)")
    return devices
