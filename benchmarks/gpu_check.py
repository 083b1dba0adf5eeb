r"""GPU check on an NVIDIA machine: tasktrace's GPU energy and memory against independent readings.

One shot, about a minute on one GPU (well under 5 minutes): nested tasks doing bf16 torch
matmuls (``--seconds`` each, 4 s by default; the first on matrices twice as large), an idle task
of the same length, then, in a fresh process without torch, a CuPy matmul task (if CuPy is
installed) and a task running a CUDA subprocess; last, a process with ``CUDA_VISIBLE_DEVICES``
naming one GPU by UUID. For each task it prints the duration, ``peak_gpu_memory`` and its source
against torch's own figure (``max_memory_allocated``) and NVML's process memory (polled by this
script every 100 ms), and ``gpu_power`` against the energy integrated from ``nvidia-smi
--query-gpu=power.draw.instant`` sampled every 100 ms, with their ratio. Then the checks, each
PASS or FAIL:

* busy (matmul) task energy > idle task energy;
* NVML energy within 10% of the integrated nvidia-smi power (tasks of at least 2 s);
* ``peak_gpu_memory`` == torch's ``max_memory_allocated`` (source ``torch``; a parent's peak is
  its largest child's);
* the tasks without torch: ``peak_gpu_memory`` within 10% of NVML's process memory (source
  ``nvml-sampled``);
* ``CUDA_VISIBLE_DEVICES`` naming one GPU: tasktrace measures only that device.

Exit status 1 on any FAIL. Where torch or a CUDA GPU is missing it says so and exits 0 without
starting a task. ``--dry-run`` needs no GPU: it prints what a real run would do, runs the tasks
with CPU stand-ins, the one-device child process, the nvidia-smi parser and integration on
synthetic samples, and the checks on synthetic figures.

On a fresh GPU machine with only the project and torch (the lent H200 image has torch, CuPy,
nvidia-ml-py, psutil, click and rich, but not the OpenTelemetry and pydantic packages, and
nothing can be fetched there), first, here, in the repo root, once (about 5 MB of wheels)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        'opentelemetry-sdk>=1.30' 'opentelemetry-exporter-otlp-proto-http>=1.30' \\
        'pydantic>=2.12' 'pydantic-settings>=2.3'

then on the GPU machine, from the repo root (a device run carrying ``.whl``, timeout 300 s)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check \\
        2>&1 | tee $OUT/gpu_check.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._common import ROOT
from benchmarks._gpu_checks import (
    CHECK_NAMES,
    Result,
    evaluate,
    exit_status,
    print_checks,
    print_results,
    result_of,
    synthetic_results,
)
from benchmarks._gpu_readings import (
    NvmlProcessWatch,
    PowerSampler,
    parse_smi_line,
    smi_command,
)
from tasktrace import Task
from tasktrace.meters.nvml import NvmlMeter

GRANDCHILD = (
    "import sys, time, torch\n"
    "x = torch.empty(2 ** 31, dtype=torch.uint8, device='cuda')\n"
    "torch.cuda.synchronize()\n"
    "time.sleep(float(sys.argv[1]))\n"
)
"""A CUDA program the torch-free child runs as its subprocess: 2 GiB held for the task's length."""


def _plan(seconds: float, n: int) -> list[str]:
    child = f"{sys.executable} -m benchmarks.gpu_check --seconds {seconds:g} --child"
    return [
        "sample power: " + " ".join(smi_command("power.draw.instant")),
        f"task gpu-check > matmul > matmul-0: bf16 {2 * n}x{2 * n} torch matmuls for {seconds:g} s",
        f"task gpu-check > matmul > matmul-1: bf16 {n}x{n} torch matmuls for {seconds:g} s",
        f"task gpu-check > idle: sleep {seconds:g} s with the CUDA context held",
        f"run {child} nontorch: task cupy-matmul (if CuPy), task cuda-subprocess (2 GiB via "
        f"a torch grandchild), in a process without torch",
        f"run CUDA_VISIBLE_DEVICES=<last GPU's UUID> {child} devices: the devices measured",
        "then check: " + "; ".join(CHECK_NAMES),
    ]


def _matmuls(torch: Any, n: int, seconds: float) -> None:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(8):
            c = a @ b
        torch.cuda.synchronize()
    del a, b, c


def _torch_tasks(torch: Any, nvml: Any, n: int, seconds: float) -> list[Result]:
    results: list[Result] = []

    def leaf(label: str, work: Callable[[], None], kind: str) -> None:
        with NvmlProcessWatch(nvml, lambda: {os.getpid()}) as watch, Task(label) as task:
            work()
            torch.cuda.synchronize()
            torch_bytes = int(torch.cuda.max_memory_allocated())
        results.append(result_of(task, kind, torch_bytes=torch_bytes, nvml=watch.peak_bytes))

    with Task("gpu-check") as root:
        with Task("matmul") as parent:
            leaf("matmul-0", lambda: _matmuls(torch, 2 * n, seconds), "busy")
            leaf("matmul-1", lambda: _matmuls(torch, n, seconds), "busy")
        leaf("idle", lambda: time.sleep(seconds), "idle")
    torch_max = max(r.torch_bytes or 0 for r in results)
    busy_max = max(r.torch_bytes or 0 for r in results if r.kind == "busy")
    return [
        result_of(root, "parent", torch_bytes=torch_max),
        result_of(parent, "parent", torch_bytes=busy_max),
        *results,
    ]


def _child(kind: str, seconds: float, environ: dict[str, str] | None = None) -> Any:
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--seconds", str(seconds)]
    env = {**os.environ, **(environ or {})}
    done = subprocess.run(
        [*command, "--child", kind],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"gpu_check: child {kind} failed ({done.returncode}): {done.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def _child_nontorch(seconds: float, n: int) -> int:
    import pynvml

    pynvml.nvmlInit()
    results: list[Result] = []
    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is not None:
        with NvmlProcessWatch(pynvml, lambda: {os.getpid()}) as watch, Task("cupy-matmul") as t:
            a = cupy.random.random((n, n), dtype=cupy.float32)
            b = cupy.random.random((n, n), dtype=cupy.float32)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                c = a @ b
                cupy.cuda.Device().synchronize()
        results.append(result_of(t, "nontorch", nvml=watch.peak_bytes))
        del a, b, c
        cupy.get_default_memory_pool().free_all_blocks()
    pids = {os.getpid()}  # this process (its CUDA context, if CuPy made one) and the child
    with NvmlProcessWatch(pynvml, lambda: set(pids)) as watch, Task("cuda-subprocess") as t:
        child = subprocess.Popen([sys.executable, "-c", GRANDCHILD, str(seconds)])
        pids.add(child.pid)
        child.wait(timeout=180)
    results.append(result_of(t, "nontorch", nvml=watch.peak_bytes))
    print(json.dumps([r.as_dict() for r in results]))
    return 0


def _child_devices() -> int:
    meter = NvmlMeter()
    available = meter.available()
    with Task("one-device") as task:
        time.sleep(1.0)
    print(
        json.dumps(
            {
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "available": available,
                "reason": meter.reason,
                "devices": [d.uuid for d in meter.devices],
                "gpu_devices": (task.model_extra or {}).get("gpu_devices"),
                "gpu_power": task.gpu_power,
            }
        )
    )
    return 0


def _last_gpu_uuid(nvml: Any) -> str:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles.sort(key=lambda h: str(nvml.nvmlDeviceGetPciInfo(h).busId))
    return str(nvml.nvmlDeviceGetUUID(handles[-1]))


def _power_field() -> str:
    probe = subprocess.run(
        ["nvidia-smi", "--query-gpu=power.draw.instant", "--format=csv,noheader,nounits"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    first = (probe.stdout.strip().splitlines() or [""])[0]
    ok = probe.returncode == 0 and first.replace(".", "", 1).isdigit()
    return "power.draw.instant" if ok else "power.draw"


def run(seconds: float, n: int) -> int:
    """Run the check on this machine's GPU; return the exit status."""
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; nothing to check")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; nothing to check")
        return 0
    import pynvml

    pynvml.nvmlInit()
    torch.zeros(1, device="cuda")  # initialise CUDA first: NVML maps devices by torch's UUIDs
    _matmuls(torch, 1024, 0.2)  # warm cuBLAS up outside the tasks
    print(
        f"gpu_check: {torch.cuda.get_device_name()}, {torch.cuda.device_count()} visible, "
        f"torch {torch.__version__}, driver {pynvml.nvmlSystemGetDriverVersion()}"
    )
    sampler = PowerSampler(smi_command(_power_field() if shutil.which("nvidia-smi") else "-"))
    print("gpu_check: sampling power with:", " ".join(sampler.command))
    try:
        if not sampler.start():
            print("gpu_check: nvidia-smi gave no power sample in 15 s")
    except OSError as e:  # no nvidia-smi: the energy check fails for want of a reading
        print(f"gpu_check: cannot run nvidia-smi ({e})")
    try:
        results = _torch_tasks(torch, pynvml, n, seconds)
        nontorch = _child("nontorch", seconds) or []
        results += [Result(**r) for r in nontorch]
        wanted = _last_gpu_uuid(pynvml)
        devices = _child("devices", seconds, {"CUDA_VISIBLE_DEVICES": wanted})
    finally:
        sampler.stop()
    for result in results:
        if result.start_s is not None and result.finish_s is not None:
            result.smi_j = sampler.energy_j(result.start_s, result.finish_s)
    print_results(results)
    print("one-device child:", json.dumps(devices))
    checks = evaluate(results, devices, wanted)
    print_checks(checks)
    return exit_status(checks)


def dry_run(seconds: float, n: int) -> int:
    """Say what a real run does and exercise every path that needs no GPU; return 0."""
    print("gpu_check --dry-run: no GPU is used. A real run would:")
    for step in _plan(seconds, n):
        print("  -", step)
    with Task("gpu-check") as root, Task("matmul"):
        for label in ("matmul-0", "matmul-1"):
            with Task(label):
                deadline = time.monotonic() + 0.1
                while time.monotonic() < deadline:  # CPU stand-in for the matmuls
                    sum(i * i for i in range(1000))
    table = Table(
        "task (CPU stand-ins, measured here)",
        "duration_s",
        "peak_gpu_memory",
        "gpu_power",
        "gpu_energy_source",
    )
    stack = [root]
    while stack:
        task = stack.pop()
        table.add_row(
            task.label,
            f"{task.duration:.3f}",
            str(task.peak_gpu_memory),
            str(task.gpu_power),
            str(task.gpu_energy_source),
        )
        stack.extend(reversed(task.subtasks))
    Console(width=150).print(table)
    print(
        "one-device child, run here:",
        json.dumps(_child("devices", seconds, {"CUDA_VISIBLE_DEVICES": "GPU-dry-run"})),
    )
    t0 = time.time() - 10
    sampler = PowerSampler(smi_command("power.draw.instant"))
    for i in range(101):  # what nvidia-smi prints: 300 W for 10 s, every 100 ms
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t0 + i / 10))
        frac = f"{(t0 + i / 10) % 1:.3f}"[1:]
        sample = parse_smi_line(f"{stamp}{frac}, 0, 300.00")
        assert sample is not None
        sampler.samples.setdefault(0, []).append((sample[0], sample[2]))
    print(
        f"nvidia-smi parsing and integration: 300 W over 4 s = "
        f"{sampler.energy_j(t0 + 3, t0 + 7):.1f} J (expected 1200.0)"
    )
    print("checks on synthetic figures (not measurements), to exercise them:")
    results, devices, wanted = synthetic_results()
    print_results(results)
    print_checks(evaluate(results, devices, wanted))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (or a child step, or the dry run); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each task")
    parser.add_argument("--n", type=int, default=8192, help="matrix side (the first task: 2n)")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: say and exercise")
    parser.add_argument("--child", choices=["nontorch", "devices"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "nontorch":
        return _child_nontorch(args.seconds, args.n)
    if args.child == "devices":
        return _child_devices()
    if args.dry_run:
        return dry_run(args.seconds, args.n)
    return run(args.seconds, args.n)


if __name__ == "__main__":
    sys.exit(main())
