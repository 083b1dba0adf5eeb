"""The figures and checks of ``benchmarks/gpu_check.py``: one row per task, PASS/FAIL per check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "CHECK_NAMES",
    "Check",
    "Result",
    "evaluate",
    "exit_status",
    "print_checks",
    "print_results",
    "result_of",
    "synthetic_results",
]

TOLERANCE = 0.10
"""Largest relative difference allowed between tasktrace's figure and the independent one."""

MIN_COMPARED_S = 2.0
"""Shortest task whose energy is compared with nvidia-smi's (100 ms samples, ~1% per edge)."""

CHECK_NAMES = (
    "busy task energy > idle task energy",
    "NVML energy within 10% of integrated nvidia-smi power",
    "peak_gpu_memory == torch max_memory_allocated (torch tasks)",
    "peak_gpu_memory within 10% of NVML process memory (tasks without torch)",
    "CUDA_VISIBLE_DEVICES naming one GPU: only that GPU measured",
)


@dataclass
class Result:
    """One task's figures: tasktrace's and the independent ones (bytes, joules, seconds)."""

    label: str
    kind: str  # "busy", "idle", "parent" (torch tasks) or "nontorch"
    duration_s: float | None
    start_s: float | None
    finish_s: float | None
    peak_bytes: int | None
    peak_source: str | None
    energy_j: float | None
    energy_source: str | None
    energy_scope: str | None
    torch_bytes: int | None = None
    nvml_bytes: int | None = None
    smi_j: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (a child process prints it)."""
        return asdict(self)


def result_of(
    task: Any, kind: str, *, torch_bytes: int | None = None, nvml: int | None = None
) -> Result:
    """Build a :class:`Result` from a finished ``tasktrace.Task`` and the independent figures."""
    return Result(
        task.label,
        kind,
        task.duration,
        task.start_time,
        task.finish_time,
        task.peak_gpu_memory,
        task.peak_gpu_memory_source,
        task.gpu_power,
        task.gpu_energy_source,
        task.gpu_energy_scope,
        torch_bytes,
        nvml,
    )


@dataclass
class Check:
    """One check's outcome."""

    name: str
    passed: bool
    detail: str


def _near(value: float | None, reference: float | None) -> bool:
    if value is None or not reference:
        return False
    return abs(value / reference - 1) <= TOLERANCE


def evaluate(results: list[Result], devices: dict[str, Any] | None, wanted: str) -> list[Check]:
    """Run the five checks of :data:`CHECK_NAMES` on the figures; a check with no data fails."""
    busy = [r for r in results if r.kind == "busy"]
    idle = [r for r in results if r.kind == "idle"]
    busy_ok = bool(busy and idle) and all(
        b.energy_j is not None and i.energy_j is not None and b.energy_j > i.energy_j
        for b in busy
        for i in idle
    )
    energy = [r for r in results if r.kind != "parent" and (r.duration_s or 0) >= MIN_COMPARED_S]
    ratios = [
        f"{r.label} {r.energy_j / r.smi_j:.3f}" if r.energy_j and r.smi_j else f"{r.label} -"
        for r in energy
    ]
    torch_tasks = [r for r in results if r.kind in ("busy", "idle", "parent")]
    nontorch = [r for r in results if r.kind == "nontorch"]
    seen = (devices or {}).get("devices")
    return [
        Check(
            CHECK_NAMES[0],
            busy_ok,
            "busy "
            + ", ".join(f"{r.energy_j}" for r in busy)
            + " J; idle "
            + ", ".join(f"{r.energy_j}" for r in idle)
            + " J",
        ),
        Check(
            CHECK_NAMES[1],
            bool(energy) and all(_near(r.energy_j, r.smi_j) for r in energy),
            "ratio tasktrace/nvidia-smi: " + ", ".join(ratios),
        ),
        Check(
            CHECK_NAMES[2],
            bool(torch_tasks)
            and all(
                r.peak_source == "torch" and r.peak_bytes == r.torch_bytes for r in torch_tasks
            ),
            ", ".join(f"{r.label} {r.peak_bytes}/{r.torch_bytes}" for r in torch_tasks),
        ),
        Check(
            CHECK_NAMES[3],
            bool(nontorch)
            and all(
                r.peak_source == "nvml-sampled" and _near(r.peak_bytes, r.nvml_bytes)
                for r in nontorch
            ),
            ", ".join(f"{r.label} {r.peak_bytes}/{r.nvml_bytes}" for r in nontorch)
            or "no task without torch ran",
        ),
        Check(
            CHECK_NAMES[4],
            devices is not None
            and seen == [wanted]
            and devices.get("gpu_devices") is None
            and devices.get("gpu_power") is not None,
            f"asked for {wanted}, measured {seen}, gpu_power {(devices or {}).get('gpu_power')}",
        ),
    ]


def exit_status(checks: list[Check]) -> int:
    """Return 1 if any check failed, else 0."""
    return 0 if all(c.passed for c in checks) else 1


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _j(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_results(results: list[Result]) -> None:
    """Print one row per task (memory in MiB, energy in J)."""
    table = Table(
        "task",
        "kind",
        "duration_s",
        "peak MiB",
        "source",
        "torch MiB",
        "NVML MiB",
        "gpu_power J",
        "scope",
        "nvidia-smi J",
        "ratio",
    )
    for r in results:
        ratio = f"{r.energy_j / r.smi_j:.3f}" if r.energy_j and r.smi_j else "-"
        duration = "-" if r.duration_s is None else f"{r.duration_s:.2f}"
        table.add_row(
            r.label,
            r.kind,
            duration,
            _mib(r.peak_bytes),
            str(r.peak_source),
            _mib(r.torch_bytes),
            _mib(r.nvml_bytes),
            _j(r.energy_j),
            str(r.energy_scope),
            _j(r.smi_j),
            ratio,
        )
    Console(width=170).print(table)


def print_checks(checks: list[Check]) -> None:
    """Print each check as ``PASS`` or ``FAIL`` with its figures."""
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}: {check.name} ({check.detail})")


def synthetic_results() -> tuple[list[Result], dict[str, Any], str]:
    """Figures shaped like a real run's (4 s tasks), made up to exercise the checks in a dry run."""
    gib = 2**30
    seconds = 4.0

    def row(label: str, kind: str, peak: int, source: str, energy: float, **kw: Any) -> Result:
        return Result(
            label,
            kind,
            seconds,
            0.0,
            seconds,
            peak,
            source,
            energy,
            "nvml-counter",
            "device",
            smi_j=energy * 1.01,
            **kw,
        )

    results = [
        row("gpu-check", "parent", 3 * gib // 2, "torch", 5_000.0, torch_bytes=3 * gib // 2),
        row("matmul", "parent", 3 * gib // 2, "torch", 4_600.0, torch_bytes=3 * gib // 2),
        row("matmul-0", "busy", 3 * gib // 2, "torch", 2_400.0, torch_bytes=3 * gib // 2),
        row("matmul-1", "busy", 3 * gib // 8, "torch", 2_200.0, torch_bytes=3 * gib // 8),
        row("idle", "idle", 0, "torch", 400.0, torch_bytes=0),
        row(
            "cuda-subprocess",
            "nontorch",
            2 * gib + 500 * 2**20,
            "nvml-sampled",
            450.0,
            nvml_bytes=2 * gib + 502 * 2**20,
        ),
    ]
    wanted = "GPU-00000000-0000-0000-0000-000000000000"
    return results, {"devices": [wanted], "gpu_devices": None, "gpu_power": 120.0}, wanted
