"""Scale: 100,000 tasks (10 epochs × 10,000) under one root with a task file.

Reports the time of each block of 10,000 tasks (the last within 1.5× of the first means no
quadratic cost), the RSS growth per finished task, and the cost of one refresh of the whole
tree's file at the end. The refresh interval is shortened to 1 s so refreshes happen during
the run. Then, on the finished file: the check a task makes at start before replacing an
existing file (``check_replaceable``: is it tasktrace's output?), beside a full parse of the
same file (what a naive check would cost). Runs in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Row, print_rows, run_json


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(epochs: int, per_epoch: int) -> dict[str, object]:
    os.environ["TASKTRACE_REFRESH_INTERVAL_S"] = "1"
    from tasktrace import Task
    from tasktrace.tree.files import check_replaceable

    folder = Path(tempfile.mkdtemp())
    path = folder / "scale.json"
    blocks: list[float] = []
    gc.collect()
    rss0 = _rss_bytes()
    with Task("root", file=path) as root:
        for epoch in range(epochs):
            start = time.perf_counter()
            with Task(f"epoch {epoch}", epoch=epoch):
                for _ in range(per_epoch):
                    with Task("step"):
                        pass
            blocks.append(time.perf_counter() - start)
        gc.collect()
        rss1 = _rss_bytes()
        start = time.perf_counter()
        root.update()
        refresh_s = time.perf_counter() - start
    checks = 200
    start = time.perf_counter()
    for _ in range(checks):
        check_replaceable(path, override="")
    check_s = (time.perf_counter() - start) / checks
    start = time.perf_counter()
    Task.model_validate_json(path.read_bytes())
    parse_s = time.perf_counter() - start
    return {
        "check_s": check_s,
        "parse_s": parse_s,
        "blocks_s": blocks,
        "rss_per_task_bytes": (rss1 - rss0) / (epochs * (per_epoch + 1)),
        "refresh_s": refresh_s,
        "file_bytes": path.stat().st_size,
    }


def run(quick: bool = False) -> list[Row]:
    """Run the scale test in a fresh process and return the rows."""
    epochs, per_epoch = (10, 1000) if quick else (10, 10000)
    res = run_json("scale", ["--child", str(epochs), str(per_epoch)])
    assert isinstance(res, dict)
    blocks = res["blocks_s"]
    n = epochs * per_epoch
    return [
        Row("scale", f"total time, {n:,} tasks", sum(blocks), "s"),
        Row(
            "scale",
            f"last block of {per_epoch:,} vs first",
            blocks[-1],
            "s",
            blocks[0],
            "≤ 1.5×",
            blocks[-1] / blocks[0] <= 1.5,
        ),
        Row(
            "scale",
            "memory per finished task (RSS growth)",
            res["rss_per_task_bytes"],
            "bytes",
            target="≤ 1536 (1.5 KiB)",
            met=res["rss_per_task_bytes"] <= 1536,
        ),
        Row("scale", f"one refresh of the file at {n:,} tasks", res["refresh_s"], "s"),
        Row("scale", "file size", res["file_bytes"] / 2**20, "MiB"),
        Row(
            "scale",
            "check of that file before a task replaces it (vs a full parse)",
            res["check_s"] * 1e6,
            "µs",
            res["parse_s"] * 1e6,
            "≤ 0.01×",
            res["check_s"] <= 0.01 * res["parse_s"],
        ),
    ]


def main() -> None:
    """Print the rows, or (with --child E N) the raw figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, type=int)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    print_rows(run(args.quick))


if __name__ == "__main__":
    main()
    sys.exit(0)
