"""Import cost: wall time and peak RSS of ``python -c "import tasktrace"`` vs ``python -c pass``.

The two commands alternate; each figure is the median of the runs. Peak RSS is the child's own
``VmHWM`` (``/proc/self/status``), read by the child at its end: ``ru_maxrss`` from ``wait4``
would include this (bigger) process's memory, which a child has until it execs. Also checks that
torch is never imported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from benchmarks._common import Row, print_rows

_HWM = (
    "\nfor line in open('/proc/self/status'):\n"
    "    if line.startswith('VmHWM:'): print(int(line.split()[1]) * 1024)"
)


def _one(code: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code + _HWM], capture_output=True, text=True, check=True, env=env
    )
    elapsed = time.perf_counter() - start
    return elapsed, int(proc.stdout.split()[-1])


def run(quick: bool = False) -> list[Row]:
    """Measure both commands alternately and return the rows."""
    runs = 5 if quick else 15
    bare: list[tuple[float, int]] = []
    imported: list[tuple[float, int]] = []
    no_plugins: list[tuple[float, int]] = []
    # pydantic loads every installed pydantic plugin when the first model is defined: with
    # logfire installed (the dev environment has it), that imports most of logfire.
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    for _ in range(runs):
        bare.append(_one("pass"))
        imported.append(_one("import tasktrace"))
        no_plugins.append(_one("import tasktrace", env))
    t_bare = statistics.median(t for t, _ in bare)
    t_imp = statistics.median(t for t, _ in imported)
    rss_bare = statistics.median(r for _, r in bare)
    rss_imp = statistics.median(r for _, r in imported)
    t_np = statistics.median(t for t, _ in no_plugins)
    torch = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tasktrace\nwith tasktrace.Task('x'): pass\nprint('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return [
        Row("import", "python -c pass", t_bare, "s"),
        Row(
            "import",
            "python -c 'import tasktrace'",
            t_imp,
            "s",
            t_bare,
            "≤ bare + 0.25 s",
            t_imp - t_bare <= 0.25,
        ),
        Row(
            "import",
            "… with pydantic plugins (logfire's) disabled",
            t_np,
            "s",
            t_bare,
            "≤ bare + 0.25 s",
            t_np - t_bare <= 0.25,
        ),
        Row("import", "peak RSS, import tasktrace", rss_imp / 2**20, "MiB", rss_bare / 2**20),
        Row(
            "import",
            "torch imported by import + task",
            float(torch == "True"),
            "bool",
            target="0 (never)",
            met=torch == "False",
        ),
    ]


if __name__ == "__main__":
    print_rows(run("--quick" in sys.argv))
