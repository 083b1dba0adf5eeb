"""Import cost: wall time and peak RSS of ``python -c "import tasktrace"`` vs ``python -c pass``.

The two commands alternate; each figure is the median of the runs. Peak RSS comes from the
child's own ``wait4`` resource usage (``ru_maxrss``). Also checks that torch is never imported.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks._common import Row

_UNIT = 1 if sys.platform == "darwin" else 1024


def _one(code: str) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"python -c {code!r} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss * _UNIT


def run(quick: bool = False) -> list[Row]:
    """Measure both commands alternately and return the rows."""
    runs = 5 if quick else 15
    bare: list[tuple[float, int]] = []
    imported: list[tuple[float, int]] = []
    for _ in range(runs):
        bare.append(_one("pass"))
        imported.append(_one("import tasktrace"))
    t_bare = statistics.median(t for t, _ in bare)
    t_imp = statistics.median(t for t, _ in imported)
    rss_bare = statistics.median(r for _, r in bare)
    rss_imp = statistics.median(r for _, r in imported)
    torch = subprocess.run(
        [sys.executable, "-c",
         "import sys, tasktrace\nwith tasktrace.Task('x'): pass\nprint('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return [
        Row("import", "python -c pass", t_bare, "s"),
        Row("import", "python -c 'import tasktrace'", t_imp, "s", t_bare,
            "≤ bare + 0.25 s", t_imp - t_bare <= 0.25),
        Row("import", "peak RSS, import tasktrace", rss_imp / 2**20, "MiB", rss_bare / 2**20),
        Row("import", "torch imported by import + task", float(torch == "True"), "bool",
            target="0 (never)", met=torch == "False"),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import print_rows

    print_rows(run("--quick" in sys.argv))
