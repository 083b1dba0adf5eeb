"""PyTorch CUDA peak memory, measured only when the user's program already uses CUDA.

Source: ``torch.cuda.max_memory_allocated()`` (bytes, the current CUDA device), reset with
``torch.cuda.reset_peak_memory_stats()``. tasktrace never imports torch: the meter looks for
``torch`` in :data:`sys.modules` and measures only once ``torch.cuda.is_initialized()`` is true,
so it never creates a CUDA context either. A task during which CUDA was first initialised reports
the peak since initialisation (all of it happened inside the task).

The same scope stack as RSS (:class:`~tasktrace.meters.process.HighWaterMarks`) keeps a nested
reset from losing a parent's peak.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from tasktrace.meters._base import WarnOnce
from tasktrace.meters.process import HighWaterMarks, Scope

__all__ = ["cuda_marks", "cuda_torch"]

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
