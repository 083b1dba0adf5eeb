"""Shared pieces of the benchmark suite: result rows, timing helpers, subprocess runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

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

    @property
    def ratio(self) -> float | None:
        """``value / reference`` when there is a reference."""
        return None if not self.reference else self.value / self.reference


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
