"""GPU check on an NVIDIA machine: torch matmuls inside nested tasks, with their GPU measurements.

Prints, for each task, ``peak_gpu_memory`` (torch's CUDA high-water mark), ``gpu_power`` (joules,
from NVML) and the energy fields' sources and scopes, plus a sanity check that the peak memory
covers the matrices allocated. Where there is no torch or no CUDA GPU it says so and exits 0.

    python -m benchmarks.gpu_check [--n 8192] [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

FIELDS = (
    "duration",
    "peak_gpu_memory",
    "gpu_power",
    "gpu_energy_source",
    "gpu_energy_scope",
    "gpu_energy_short_task",
    "cpu_power",
    "cpu_energy_source",
    "system_power",
    "system_energy_source",
)


def _row(task: object, depth: int) -> str:
    cells = [("  " * depth + str(getattr(task, "label", "?"))).ljust(16)]
    for name in FIELDS:
        value = getattr(task, name, None)
        cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
    return " | ".join(cells)


def _print_tree(task: object, depth: int = 0) -> None:
    print(_row(task, depth))
    for child in getattr(task, "subtasks", []):
        _print_tree(child, depth + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; return the exit status (0 also where there is nothing to check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="matrix side (float32)")
    parser.add_argument("--repeat", type=int, default=20, help="matmuls per task")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; nothing to check")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; nothing to check")
        return 0

    from tasktrace import Task
    from tasktrace.meters import active_meters

    torch.zeros(1, device="cuda")  # initialise CUDA first, so NVML maps devices by torch's UUIDs
    print(f"gpu_check: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible)")
    n, repeat = args.n, args.repeat
    with Task("gpu-check") as root:
        for step in range(2):
            with Task(f"matmul-{step}"):
                a = torch.randn(n, n, device="cuda")
                b = torch.randn(n, n, device="cuda")
                for _ in range(repeat):
                    c = a @ b
                torch.cuda.synchronize()
                del a, b, c
        with Task("tiny"):
            torch.ones(16, device="cuda").sum().item()
    torch.cuda.synchronize()

    print("meters:", [getattr(m, "name", "?") for m in active_meters()])
    for meter in active_meters():
        for child in getattr(meter, "meters", []):
            reason = getattr(child, "reason", None)
            if reason:
                print(f"  {child.name}: unavailable ({reason})")
    print(" | ".join(["task".ljust(16), *FIELDS]))
    _print_tree(root)

    matrices_bytes = 3 * n * n * 4
    child = root.subtasks[0] if root.subtasks else root
    ok = child.peak_gpu_memory is not None and child.peak_gpu_memory >= matrices_bytes
    print(f"peak_gpu_memory >= 3 n^2 float32 ({matrices_bytes} bytes): {ok}")
    energy_ok = root.gpu_power is not None and root.gpu_power > 0
    print(f"gpu_power measured and positive: {energy_ok} (source {root.gpu_energy_source})")
    return 0 if ok and energy_ok else 1


if __name__ == "__main__":
    sys.exit(main())
