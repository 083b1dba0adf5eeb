"""Run the benchmark suite and print one table: ``python -m benchmarks [--quick] [NAME ...]``.

Benchmarks: overhead, instructions, import, scale, burst, accuracy, engines (see each module's
docstring). Figures with a reference are measured side by side in the same run; the ratio column
is value / reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

from rich.console import Console
from rich.table import Table

from benchmarks._common import Row

BENCHMARKS = ("overhead", "instructions", "import", "scale", "burst", "accuracy", "engines")


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


def main() -> None:
    """Run the chosen benchmarks (default: all) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    from benchmarks import accuracy, burst, engines, import_time, instructions, overhead, scale

    modules = {
        "overhead": overhead,
        "instructions": instructions,
        "import": import_time,
        "scale": scale,
        "burst": burst,
        "accuracy": accuracy,
        "engines": engines,
    }
    rows: list[Row] = []
    for name in names:
        rows.extend(modules[name].run(args.quick))
    print_rows(rows)
    sys.exit(0)


if __name__ == "__main__":
    main()
