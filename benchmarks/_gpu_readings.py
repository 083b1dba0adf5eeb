"""Independent GPU readings for ``benchmarks/gpu_check.py``: nvidia-smi power and NVML memory.

* Power: ``nvidia-smi --query-gpu=timestamp,index,power.draw.instant`` every 100 ms
  (``power.draw`` where the driver has no instant reading), parsed from its CSV lines and
  integrated over a task's wall-clock window (trapezoid rule): a reading that shares no code
  with tasktrace's NVML energy counter.
* Process memory: NVML's ``nvmlDeviceGetComputeRunningProcesses`` for given PIDs, polled by the
  check itself every 100 ms (the largest sum seen), independent of tasktrace's own sampling.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

__all__ = ["NvmlProcessWatch", "PowerSampler", "integrate_j", "parse_smi_line", "smi_command"]

SMI_INTERVAL_MS = 100
"""nvidia-smi's sampling interval, milliseconds."""


def smi_command(power_field: str) -> list[str]:
    """Return the nvidia-smi command line that samples ``power_field`` every 100 ms."""
    command = [
        "nvidia-smi",
        f"--query-gpu=timestamp,index,{power_field}",
        "--format=csv,noheader,nounits",
        f"--loop-ms={SMI_INTERVAL_MS}",
    ]
    stdbuf = shutil.which("stdbuf")  # line-buffered through the pipe
    return [stdbuf, "-oL", *command] if stdbuf else command


def parse_smi_line(line: str) -> tuple[float, int, float] | None:
    """Parse ``"2026/11/20 10:00:00.123, 0, 85.31"`` into ``(unix_s, gpu_index, watts)``.

    Returns ``None`` for a line that is not a sample (``[N/A]``, a header, an error).
    """
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3:
        return None
    try:
        stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
        return stamp.timestamp(), int(parts[1]), float(parts[2])
    except ValueError:
        return None


def integrate_j(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Integrate power samples ``(unix_s, watts)`` (sorted by time) over ``[t0, t1]``, in joules.

    Linear interpolation between samples, trapezoid rule. ``None`` when the samples do not
    cover the window (the sampler started late or stopped early).
    """
    times = [t for t, _ in samples]
    if len(samples) < 2 or t0 < times[0] or t1 > times[-1] or t1 <= t0:
        return None

    def at(t: float) -> float:
        i = max(1, bisect.bisect_left(times, t))
        (ta, wa), (tb, wb) = samples[i - 1], samples[i]
        return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)

    inside = [(t, w) for t, w in samples if t0 < t < t1]
    points = [(t0, at(t0)), *inside, (t1, at(t1))]
    return sum((ta - tp) * (wa + wp) / 2 for (tp, wp), (ta, wa) in itertools.pairwise(points))


class PowerSampler:
    """Runs nvidia-smi in the background and keeps its samples per GPU index."""

    def __init__(self, command: list[str]) -> None:
        """Prepare to run ``command`` (see :func:`smi_command`)."""
        self.command = command
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()

    def start(self, timeout_s: float = 15.0) -> bool:
        """Start sampling; return whether the first sample came within ``timeout_s``."""
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self._first.wait(timeout_s)

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            sample = parse_smi_line(line)
            if sample is not None:
                unix_s, index, watts = sample
                self.samples.setdefault(index, []).append((unix_s, watts))
                self._first.set()

    def stop(self) -> None:
        """Stop nvidia-smi (SIGINT, then kill) and wait for the last lines."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def energy_j(self, t0: float, t1: float, indices: Iterable[int] | None = None) -> float | None:
        """Energy of the GPUs ``indices`` (default: all sampled) over ``[t0, t1]``, joules."""
        chosen = sorted(self.samples) if indices is None else list(indices)
        if not chosen:
            return None
        parts = [integrate_j(sorted(self.samples.get(i, [])), t0, t1) for i in chosen]
        return None if None in parts else sum(parts)  # type: ignore[arg-type]


class NvmlProcessWatch:
    """Polls NVML every 100 ms for the GPU memory of some PIDs; keeps the largest sum seen."""

    def __init__(self, nvml: Any, pids: Callable[[], set[int]]) -> None:
        """Watch the PIDs that ``pids()`` returns at each poll (``nvml``: initialised pynvml)."""
        self._nvml = nvml
        self._pids = pids
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> int | None:
        """Return the current sum of ``usedGpuMemory`` over the PIDs (``None``: none listed)."""
        nvml, pids, total = self._nvml, self._pids(), None
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            handles = [handle]
            with contextlib.suppress(nvml.NVMLError):
                if nvml.nvmlDeviceGetMigMode(handle)[0] == nvml.NVML_DEVICE_MIG_ENABLE:
                    handles = []
                    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                        with contextlib.suppress(nvml.NVMLError):
                            handles.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
            for h in handles:
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(h):
                    if process.pid in pids and process.usedGpuMemory is not None:
                        total = (total or 0) + int(process.usedGpuMemory)
        if total is not None:
            self.peak_bytes = max(self.peak_bytes or 0, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def __enter__(self) -> NvmlProcessWatch:
        """Start polling."""
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Poll once more and stop."""
        self._stop.set()
        self._thread.join(timeout=5)
        del exc
        self.poll()
