"""Per-task overhead in machine instructions (valgrind's cachegrind): the noise-free companion.

:mod:`benchmarks.overhead` times the cases in wall-clock seconds, which on a shared virtual
machine moves by ±20% from run to run and by 2× from one machine to another (a bare span took
16 µs on one of this project's VMs and 36 µs on the next). This benchmark runs the same cases,
built by the same functions, each in its own ``valgrind --tool=cachegrind`` process and counts
the instructions the process executed (``I refs``): once with ``N`` iterations and once with
``N/6``, after the same warm-up, and the difference over the difference of iterations is the
cost of one iteration, start-up and warm-up cancelled out. Counts repeat to within about 0.1%
from run to run on any machine. They do not see what valgrind does not count: system calls
(``getrusage``, 0.6-1 µs each here), cache misses and page faults, so a wall-clock ratio sits
above the instruction ratio (about 0.15-0.6× on the VMs measured; see :doc:`/performance`).

Cases (the same SDK set-up as :mod:`benchmarks.overhead`: a global ``TracerProvider`` with a
``BatchSpanProcessor`` and a null exporter, the export thread's work counted as well):

- bare span, floor and nested task, nested task with task metrics on (a global meter
  provider found, the ``metrics`` setting unset: durations as counters): as in the overhead
  benchmark; every case ends with the meter provider's ``force_flush``, so the metrics cases
  count the collection's work; the same with task metrics asked for (the ``metrics`` setting
  true: the duration histogram, whose waiting durations tasktrace records into the SDK's
  histogram at the collection: work moved off the task's path, not removed);
- task under a root with a file: nested tasks whose root writes its task file at start and at
  finish (the whole tree of the call's tasks, serialised and saved), as in the overhead
  benchmark: the cost per task includes its share of the file (a call of ``N`` tasks writes a
  tree of ``N`` tasks; the count per iteration is of the larger call less the smaller, so the
  share is of a tree's growth, the same per task as a file of 2,000 tasks). The refresh thread
  is kept from running (``refresh_interval_s`` of a day): under valgrind a call lasts fifty
  times longer than the 0.1 s the overhead benchmark's does, and the refreshes of the growing
  file that it would then write (about 13% of the count) are not the task's cost;
- top-level task: a task with no parent (its own provider look-up, sigterm check, high-water
  mark reset; no file);
- worker root: what a pool worker runs per call with the joblib integration (a ``Task`` whose
  parent is the submitting task of another process, through the worker's cached remote scope,
  its record serialised for the trip home at every 50th call as a batch of 50).

``python -m benchmarks.instructions`` prints the table; ``python -m benchmarks instructions``
puts it in the suite's table. Needs ``valgrind`` on ``PATH`` (Debian: ``apt-get install
valgrind``); without it the benchmark prints one row saying so. Takes about three minutes (two
processes at a time).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import ROOT, Row, print_rows

N = 6000
"""Iterations of the larger run of each case; the smaller runs ``N // 6``."""
WARM_UP = 200
"""Iterations run before either count starts mattering (the same in both runs)."""
REFRESH_OFF_S = 86400.0
"""The refresh interval of the file case: no refresh during a count."""
BARE = "bare OTel span"
FLOOR = "floor: span + 6 attributes + status (no tasktrace)"
NESTED = "nested task"
NESTED_METRICS = "nested task, task metrics on (global MeterProvider found: duration counters)"
NESTED_HISTOGRAM = "nested task, task metrics asked for (duration histogram)"
WITH_FILE = "task under a root with a file (the root's file written at start and finish)"
TOP = "top-level task"
WORKER = "worker root (joblib call under a remote task, record sent home)"
CASES = (BARE, FLOOR, NESTED, NESTED_METRICS, NESTED_HISTOGRAM, WITH_FILE, TOP, WORKER)
TARGETS = {NESTED: 2.0, WITH_FILE: 2.5}
"""Issue 13's wall-clock bound, shown beside the instruction ratio (not the same measure)."""
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _case(name: str) -> Callable[[int], None]:
    """Return the case's function, after setting up the SDK as the overhead benchmark does."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from benchmarks import overhead

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(overhead.NullExporter(), max_queue_size=1 << 17))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[PeriodicExportingMetricReader(overhead.NullMetricExporter())])
    )
    tracer = trace.get_tracer("benchmark")
    if name in (BARE, FLOOR):
        return overhead.sdk_cases(tracer)[overhead.BARE if name == BARE else overhead.FLOOR]
    cases, prepare = overhead.task_cases(Path(tempfile.mkdtemp()))
    if name == NESTED_HISTOGRAM:  # task metrics asked for: the duration histogram
        from tasktrace.core.settings import load_settings, reset_settings
        from tasktrace.export.metrics_setup import reset_metrics

        reset_settings(load_settings(metrics=True, metrics_durations="auto"))
        reset_metrics()
        return cases[overhead.NESTED_METRICS]
    keys = {
        NESTED: overhead.NESTED,
        NESTED_METRICS: overhead.NESTED_METRICS,
        WITH_FILE: overhead.WITH_FILE,
        TOP: overhead.TOP,
    }
    if name in keys:
        prepare[keys[name]]()
        if name == WITH_FILE:  # no refresh: see the module docstring
            from tasktrace.core.settings import load_settings, reset_settings

            reset_settings(load_settings(metrics=False, refresh_interval_s=REFRESH_OFF_S))
        return cases[keys[name]]
    prepare[overhead.NESTED]()  # metrics off, as in the engines benchmark (no meter provider)
    return _worker_root()


def _worker_root() -> Callable[[int], None]:
    """Return a joblib worker's calls: roots under a remote scope, taken home 50 at a time."""
    import dataclasses

    from tasktrace import Task
    from tasktrace.integrations.joblib import CarriedBatch

    with Task("driver"):
        from tasktrace.task.carriers import capture

        here = capture()
    assert here is not None
    # The same carrier as it arrives in a worker process: another process's pid.
    carrier = dataclasses.replace(here, origin_pid=here.origin_pid + 1)

    def call() -> None:
        with Task("call"):
            pass

    def batch_of_50() -> list[None]:
        return [call() for _ in range(50)]

    def run(k: int) -> None:
        for _ in range(k // 50):
            CarriedBatch(batch_of_50, carrier)()

    return run


def _child(name: str, n: int) -> None:
    """Run the case: the warm-up, then ``n`` iterations (the count is valgrind's)."""
    import gc

    fn = _case(name)
    gc.disable()  # as the overhead benchmark's GC-off figures: the case's own work
    fn(WARM_UP)
    fn(n)
    from opentelemetry import metrics

    metrics.get_meter_provider().force_flush()  # type: ignore[attr-defined]  # the SDK's


def _count(name: str, n: int) -> int:
    """Instructions of one child process running ``name`` with ``n`` iterations."""
    # This tree's sources first: from a git worktree, the venv's editable install would
    # otherwise import another checkout's tasktrace (the count would not be of this code).
    path = os.pathsep.join((str(ROOT / "src"), str(ROOT)))
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=path)
    for key in [k for k in env if k.startswith(("OTEL_", "TASKTRACE_"))]:
        del env[key]
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        name,
        "--n",
        str(n),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    match = _REFS.search(out.stderr)
    if out.returncode != 0 or match is None:
        tail = out.stderr[-2000:]
        raise RuntimeError(f"valgrind run of {name!r} failed ({out.returncode}): {tail}")
    return int(match.group(1).replace(",", ""))


def per_iteration(names: tuple[str, ...], n: int = N) -> dict[str, float]:
    """Instructions per iteration of each case: ``(I(n) - I(n/6)) / (n - n/6)``.

    Raises:
        RuntimeError: A valgrind run failed (its stderr's tail in the message).
    """
    small = n // 6
    jobs = [(name, k) for name in names for k in (n, small)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs), strict=True))
    return {name: (counts[name, n] - counts[name, small]) / (n - small) for name in names}


def run(quick: bool = False) -> list[Row]:
    """Count every case; return one row each (ratio to the bare span)."""
    if shutil.which("valgrind") is None:
        return [Row("instructions", "valgrind is not on PATH: nothing counted", 0, "")]
    names = (BARE, NESTED) if quick else CASES
    per = per_iteration(names, N // 3 if quick else N)
    bare = per[BARE]
    rows = [Row("instructions", BARE, per[BARE], "instr/task")]
    for name in names[1:]:
        bound = TARGETS.get(name)
        target = f"(wall clock ≤ {bound}× bare)" if bound else ""
        if name in (NESTED_METRICS, NESTED_HISTOGRAM):
            target = f"grew {per[name] / per[NESTED] - 1:+.1%} over nested"
        rows.append(Row("instructions", name, per[name], "instr/task", bare, target))
    return rows


def main() -> None:
    """Print the table (or, with ``--child``, run one case under the caller's valgrind)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=CASES)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.n)
        return
    print_rows(run(args.quick))


if __name__ == "__main__":
    main()
