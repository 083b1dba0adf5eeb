"""Shared pieces of the benchmark suite: result rows, timing helpers, subprocess runs."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One figure of the suite: ``value`` (in ``unit``), its ratio to a reference, the target."""

    benchmark: str
    metric: str
    value: float
    unit: str
    reference: float | None = None
    target: str = ""
    met: bool | None = None
    gc_on: float | None = None
    """The same figure with the garbage collector on (``value`` is then the GC-off one)."""
    gc_on_reference: float | None = None
    """The reference with the garbage collector on."""

    @property
    def ratio(self) -> float | None:
        """``value / reference`` when there is a reference."""
        return None if not self.reference else self.value / self.reference

    @property
    def gc_on_ratio(self) -> float | None:
        """``gc_on / gc_on_reference`` when both are known."""
        if self.gc_on is None or not self.gc_on_reference:
            return None
        return self.gc_on / self.gc_on_reference


def per_iteration_s(fn: Callable[[int], None], n: int) -> float:
    """Seconds per iteration of ``fn(n)`` (one timed call)."""
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n


def alternate(cases: dict[str, Callable[[int], None]], n: int, rounds: int) -> dict[str, float]:
    """Median seconds per iteration of each case, the cases alternating round by round."""
    for fn in cases.values():  # warm up
        fn(max(1, n // 10))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(per_iteration_s(fn, n))
    return {name: statistics.median(v) for name, v in samples.items()}


def alternate_gc(
    cases: dict[str, Callable[[int], None]],
    n: int,
    rounds: int,
    prepare: dict[str, Callable[[], None]] | None = None,
) -> dict[str, tuple[float, float, list[float]]]:
    """Per-iteration seconds of each case, with the garbage collector off and on.

    Every round runs each case twice, GC off then GC on, the cases alternating in each round
    so that machine noise hits them alike. With GC off the heap is collected before the timed
    call and the collector is re-enabled after it: the figure is the case's own work, not the
    collections that garbage of earlier cases triggers. ``prepare[name]`` (if given) runs
    untimed before each of that case's calls.

    Returns:
        name → ``(median GC off, median GC on, every GC-off sample)``, in seconds per iteration.
    """
    prepare = prepare or {}
    for name, fn in cases.items():  # warm up
        if name in prepare:
            prepare[name]()
        fn(max(1, n // 10))
    off: dict[str, list[float]] = {name: [] for name in cases}
    on: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            setup = prepare.get(name)
            if setup is not None:
                setup()
            gc.collect()
            gc.disable()
            try:
                off[name].append(per_iteration_s(fn, n))
            finally:
                gc.enable()
            on[name].append(per_iteration_s(fn, n))
    return {
        name: (statistics.median(off[name]), statistics.median(on[name]), off[name])
        for name in cases
    }


def run_json(module: str, args: Sequence[str], env: dict[str, str] | None = None) -> object:
    """Run ``python -m benchmarks.MODULE ARGS`` in a fresh process; parse its last stdout line."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        check=True,
        env=full_env,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rows_to_json(rows: list[Row]) -> str:
    """Serialise rows for a parent process."""
    return json.dumps([asdict(r) for r in rows])


def machine() -> str:
    """Describe this machine in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )


def print_rows(rows: list[Row]) -> None:
    """Print rows as a rich table."""
    table = Table(title=f"tasktrace benchmarks — {machine()}")
    cols = ("benchmark", "metric", "value", "unit", "reference", "ratio", "GC on", "target", "met")
    for col in cols:
        table.add_column(col, justify="right" if col in {"value", "reference", "ratio"} else "left")
    for r in rows:
        gc_on = ""
        if r.gc_on is not None:
            gc_on = f"{r.gc_on:.4g}" if r.gc_on_ratio is None else f"{r.gc_on_ratio:.2f}×"
        table.add_row(
            r.benchmark,
            r.metric,
            f"{r.value:.4g}",
            r.unit,
            "" if r.reference is None else f"{r.reference:.4g}",
            "" if r.ratio is None else f"{r.ratio:.2f}×",
            gc_on,
            r.target,
            "" if r.met is None else ("yes" if r.met else "MISSED"),
        )
    Console(width=180).print(table)
