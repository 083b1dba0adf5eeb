"""Run the benchmark suite and print one table: ``python -m benchmarks [--quick] [NAME ...]``.

Benchmarks: overhead, instructions, import, scale, burst, accuracy, engines (see each module's
docstring). Figures with a reference are measured side by side in the same run; the ratio column
is value / reference.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks._common import Row, print_rows

BENCHMARKS = ("overhead", "instructions", "import", "scale", "burst", "accuracy", "engines")


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
