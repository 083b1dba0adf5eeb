"""Helpers for the energy-meter tests: a fake powercap tree and a fake ``pynvml`` module."""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from pathlib import Path


class RaplTree:
    """A fake ``/sys/class/powercap`` tree in a temporary folder."""

    def __init__(self, root: Path) -> None:
        """Create an empty tree at ``root``."""
        self.root = root
        self.paths: dict[str, Path] = {}
        self.ranges: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def zone(
        self,
        zone_id: str,
        name: str,
        energy_uj: int = 0,
        range_uj: int = 262_143_328_850,
        *,
        nested: bool = False,
    ) -> Path:
        """Add a zone; ``nested`` puts it only inside its parent's folder (no flat link)."""
        parent_id = ":".join(zone_id.split(":")[:-1])
        base = self.paths[parent_id] if nested else self.root
        path = base / zone_id
        path.mkdir()
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
        self.paths[zone_id] = path
        self.ranges[zone_id] = range_uj
        self.set(zone_id, energy_uj)
        return path

    def get(self, zone_id: str) -> int:
        """Return the raw counter of a zone."""
        return int((self.paths[zone_id] / "energy_uj").read_text())

    def set(self, zone_id: str, energy_uj: int) -> None:
        """Write a zone's raw counter atomically (a poller thread may be reading it)."""
        target = self.paths[zone_id] / "energy_uj"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(f"{energy_uj}\n")
        os.replace(tmp, target)

    def advance(self, zone_id: str, delta_uj: int) -> int:
        """Add ``delta_uj`` to a zone's counter, wrapping at its range; return the wraps (0/1)."""
        raw = self.get(zone_id) + delta_uj
        wrapped = raw >= self.ranges[zone_id]
        self.set(zone_id, raw % self.ranges[zone_id])
        return int(wrapped)


@dataclass
class FakeGpu:
    """One GPU as the fake NVML sees it."""

    uuid: str
    bus_id: str
    energy_mj: int | None = 1_000_000
    """Total-energy counter; ``None``: not supported (pre-Volta)."""
    power_mw: int = 100_000
    mig: bool = False
    reads: list[str] = field(default_factory=list)


class FakeNvmlError(Exception):
    """Stands in for ``pynvml.NVMLError`` (an error code in ``value``)."""

    def __init__(self, value: int) -> None:
        """Create an error with NVML return code ``value``."""
        super().__init__(f"NVML error {value}")
        self.value = value


NOT_SUPPORTED = 3
DRIVER_NOT_LOADED = 9


def make_fake_pynvml(gpus: list[FakeGpu], *, init_error: int | None = None) -> types.ModuleType:
    """Build a module with the part of ``pynvml``'s API the NVML meter uses.

    Devices are enumerated in the order given (NVML's order), which tests make differ from PCI
    bus order.
    """
    fake = types.ModuleType("pynvml")

    def nvml_init() -> None:
        if init_error is not None:
            raise FakeNvmlError(init_error)

    def energy(handle: FakeGpu) -> int:
        handle.reads.append("energy")
        if handle.energy_mj is None:
            raise FakeNvmlError(NOT_SUPPORTED)
        return handle.energy_mj

    def power(handle: FakeGpu) -> int:
        handle.reads.append("power")
        return handle.power_mw

    def mig_mode(handle: FakeGpu) -> list[int]:
        return [1 if handle.mig else 0, 0]

    fake.NVMLError = FakeNvmlError  # type: ignore[attr-defined]
    fake.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED  # type: ignore[attr-defined]
    fake.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    fake.nvmlInit = nvml_init  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: h.uuid  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        busId=h.bus_id.encode()
    )
    fake.nvmlDeviceGetTotalEnergyConsumption = energy  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPowerUsage = power  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMigMode = mig_mode  # type: ignore[attr-defined]
    return fake
