"""Time ``tasktrace show`` on a 100,000-task file (10 phases × 10,000 steps).

Usage: python benchmarks/show_100k.py [--keep PATH]

Builds the file, then runs ``tasktrace show`` (plain, ``--collapse``, ``--totals --json``,
``--depth 1``) in a fresh interpreter each, output to /dev/null, and prints the wall seconds of
each (target < 5 s on a 2-core machine). Plain ``show`` collapses repeated siblings of a tree
this large; ``--all`` (every one of the 100,011 lines through rich) is timed last, for
information: it has no target.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasktrace import Task

PHASES = 10
STEPS = 10_000


def build(path: Path) -> int:
    """Write the file; return the number of tasks in it."""
    base = 1_700_000_000.0
    phases = []
    for p in range(PHASES):
        steps = [
            {
                "label": f"step {s}",
                "status": "finished",
                "start_time": base + p * 100 + s * 0.01,
                "finish_time": base + p * 100 + s * 0.01 + 0.009,
                "duration": 0.009,
                "cpu_time": 0.008,
                "peak_memory": 100_000_000 + s,
            }
            for s in range(STEPS)
        ]
        phases.append(
            {
                "label": f"phase {p}",
                "status": "finished",
                "start_time": base + p * 100,
                "duration": 100.0,
                "subtasks": steps,
            }
        )
    root = Task.model_validate(
        {
            "label": "run",
            "status": "finished",
            "start_time": base,
            "duration": 1000.0,
            "subtasks": phases,
        }
    )
    path.write_text(root.model_dump_json())
    return 1 + PHASES + PHASES * STEPS


def main() -> None:
    """Build the file and time the three views."""
    folder = Path(tempfile.mkdtemp())
    path = (
        Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--keep" else folder / "100k.json"
    )
    n = build(path)
    print(f"{n} tasks, {path.stat().st_size / 1e6:.1f} MB")
    exe = Path(sys.executable).with_name("tasktrace")
    for args in ([], ["--collapse"], ["--totals", "--json"], ["--depth", "1"], ["--all"]):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "show", str(path), *args], check=True, stdout=subprocess.DEVNULL)
        print(f"tasktrace show {' '.join(args) or '(plain)'}: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
