"""One side of the engine benchmark: a driver process that runs rounds on command.

``python -m benchmarks.engine_driver ENGINE MODE N FOLDER``: sets ENGINE up (``joblib``,
``ray``, ``dask``; two worker processes), prints ``ready``, then for each ``go`` line on stdin
runs one round of N calls of 1 ms and prints its wall seconds; ``stop`` ends it. MODE ``plain``
never imports tasktrace; MODE ``hook`` (Ray only) is ``plain`` with Ray's tracing start-up hook
set to one that does nothing (Ray's own tracing path, which the integration rides on); MODE
``traced`` sets the tasktrace integration up, runs each round under ``Task("round")`` (its
finish, which waits for the workers' records, is in the time) and each call inside
``Task("call")``. After each traced round the driver checks that the round's
task holds all N call tasks, so the figure is of work that was recorded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.engine_work import spin


def _joblib(traced: bool | None, folder: str) -> tuple[Callable[[int], Any], Callable[[], None]]:
    del folder
    import joblib

    if traced:
        import tasktrace.integrations.joblib  # noqa: F401 - registers the backend
        from benchmarks.engine_work_traced import spin_in_task

        joblib.parallel_config(backend="tasktrace")
        fn: Callable[[int], int] = spin_in_task
    else:
        fn = spin

    def round_(n: int) -> Any:
        return joblib.Parallel(n_jobs=2, batch_size="auto")(joblib.delayed(fn)(i) for i in range(n))

    return round_, lambda: None


def _ray(traced: bool | None, folder: str) -> tuple[Callable[[int], Any], Callable[[], None]]:
    """``traced`` ``None``: Ray's tracing hook set to one that does nothing, no tasktrace."""
    import ray

    kwargs: dict[str, Any] = {"num_cpus": 2, "include_dashboard": False, "_temp_dir": folder}
    fn: Callable[[int], int] = spin
    if traced is None:
        kwargs["_tracing_startup_hook"] = "benchmarks.engine_work:noop_tracing_hook"
    elif traced:
        from benchmarks.engine_work_traced import spin_in_task
        from tasktrace.integrations.ray import HOOK

        kwargs["_tracing_startup_hook"] = HOOK
        fn = spin_in_task
    ray.init(**kwargs)
    remote = ray.remote(num_cpus=1)(fn)

    def round_(n: int) -> Any:
        return ray.get([remote.remote(i) for i in range(n)])

    return round_, ray.shutdown


def _dask(traced: bool | None, folder: str) -> tuple[Callable[[int], Any], Callable[[], None]]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        local_directory=folder,
    )
    client = Client(cluster)
    if traced:
        from benchmarks.engine_work_traced import spin_in_task
        from tasktrace.integrations.dask import setup

        setup(client)
        fn: Callable[[int], int] = spin_in_task
    else:
        fn = spin

    def round_(n: int) -> Any:
        return client.gather(client.map(fn, range(n), pure=False))

    def close() -> None:
        client.close()
        cluster.close()

    return round_, close


ENGINES = {"joblib": _joblib, "ray": _ray, "dask": _dask}
MODES: dict[str, bool | None] = {"plain": False, "traced": True, "hook": None}


def main() -> None:
    """Set the engine up, then answer ``go`` / ``stop`` lines (see the module docstring)."""
    engine, mode, n, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode not in MODES or (mode == "hook" and engine != "ray"):
        raise SystemExit(f"mode {mode!r}: choose plain, traced (or hook, for ray)")
    traced = MODES[mode]
    round_, close = ENGINES[engine](traced, folder)
    if traced:
        from tasktrace import Task

        def run(n: int) -> None:
            with Task("round") as task:
                round_(n)
            calls = sum(1 for t in task.subtasks if t.label == "call")
            if calls != n:
                raise SystemExit(f"{engine}: the round's task holds {calls} call tasks of {n}")

    else:

        def run(n: int) -> None:
            round_(n)

    run(max(10, n // 5))  # warm up: worker processes started, modules imported
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        run(n)
        print(time.perf_counter() - start, flush=True)
    close()


if __name__ == "__main__":
    main()
