"""PyTorch CUDA peak memory, measured only when the user's program already uses CUDA.

Source: ``torch.cuda.max_memory_allocated()`` (bytes, the current CUDA device), reset with
``torch.cuda.reset_peak_memory_stats()``. tasktrace never imports torch: the meter looks for
``torch`` in :data:`sys.modules` and measures only once ``torch.cuda.is_initialized()`` is true,
so it never creates a CUDA context either. A task during which CUDA was first initialised reports
the peak since initialisation (all of it happened inside the task).

The same scope stack as RSS (:class:`~tasktrace.meters.process.HighWaterMarks`) keeps a nested
reset from losing a parent's peak.

Which source fills ``peak_gpu_memory`` (recorded in ``peak_gpu_memory_source``): torch's exact
high-water mark whenever the task's torch scope measures (torch was imported at the task's start
and CUDA is initialised at its end, :func:`torch_is_memory_source`); otherwise NVML's sampled
process memory (:mod:`tasktrace.meters.gpu_memory`), where NVML can measure.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from tasktrace.core.warn import WarnOnce
from tasktrace.meters.process import HighWaterMarks, Scope

__all__ = [
    "TorchGpuMemoryMeter",
    "cuda_marks",
    "cuda_torch",
    "gpu_driver_present",
    "torch_is_memory_source",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


def cuda_torch() -> Any | None:
    """Return the ``torch`` module if the program imported it and CUDA is initialised, else None.

    Never imports torch and never initialises CUDA.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch if torch.cuda.is_initialized() else None
    except Exception as e:  # noqa: BLE001 - a broken torch must not break the user's task
        _warn("is_initialized", "tasktrace: cannot query torch.cuda (%s); no GPU memory", e)
        return None


def _read() -> int | None:
    torch = cuda_torch()
    if torch is None:
        return None
    try:
        return int(torch.cuda.max_memory_allocated())
    except Exception as e:  # noqa: BLE001 - see cuda_torch
        _warn("read", "tasktrace: torch.cuda.max_memory_allocated failed (%s)", e)
        return None


def _reset() -> bool:
    torch = cuda_torch()
    if torch is None:
        return False
    try:
        torch.cuda.reset_peak_memory_stats()
    except Exception as e:  # noqa: BLE001 - see cuda_torch
        _warn("reset", "tasktrace: torch.cuda.reset_peak_memory_stats failed (%s)", e)
        return False
    return True


class _CudaMarks(HighWaterMarks):
    def open_if_used(self, *, reset: bool) -> Scope | None:
        """Open a scope when torch is imported (CUDA may be initialised during the task)."""
        if "torch" not in sys.modules:
            return None
        return self.open(reset=reset and cuda_torch() is not None)


cuda_marks = _CudaMarks(_read, _reset, "CUDA")
"""The process's CUDA peak-memory tracker (shared by every task)."""


def torch_is_memory_source(torch_at_start: bool) -> bool:
    """Return whether a task's ``peak_gpu_memory`` is torch's high-water mark.

    The task façade opens a torch scope when ``torch`` is imported at the task's start, and
    reads it at the end, where it has a value once CUDA is initialised. NVML's sampled memory
    fills the field only where this is false. Never imports torch.

    Args:
        torch_at_start: Whether ``"torch"`` was in :data:`sys.modules` when the task started.
    """
    return torch_at_start and cuda_torch() is not None


_DRIVER_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")
"""Files present where an NVIDIA (or AMD ROCm, or WSL) GPU driver is loaded, on Linux."""


def gpu_driver_present() -> bool:
    """Return whether a GPU driver seems present (Linux: a driver node exists; elsewhere True)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(node) for node in _DRIVER_NODES)


class TorchGpuMemoryMeter:
    """Records ``peak_gpu_memory_source = "torch"`` for tasks whose peak is torch's.

    The value itself is read by the task façade (:data:`cuda_marks`); this meter only names its
    source, by the rule of :func:`torch_is_memory_source`. Available where a GPU driver is
    present (:func:`gpu_driver_present`), so CPU-only machines pay nothing. Thread-safe.
    """

    name = "torch-gpu-memory"
    reason = "no GPU driver here (none of " + ", ".join(_DRIVER_NODES) + " exists)"
    """Why :meth:`available` is false where it is (recorded by the meter checks)."""

    def available(self) -> bool:
        """Return whether a GPU driver is present."""
        return gpu_driver_present()

    def start(self) -> bool:
        """Return whether torch is imported as the task starts (the façade's scope opens)."""
        return "torch" in sys.modules

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> dict[str, str]:
        """Return ``{"peak_gpu_memory_source": "torch"}`` when torch's mark is the source.

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Unused.
            final: Unused.

        Returns:
            The source, or nothing when torch is not the source for this task.
        """
        del elapsed_s, final
        if torch_is_memory_source(snapshot is True):
            return {"peak_gpu_memory_source": "torch"}
        return {}
