"""Worker functions for the engine tests: plain user code using Task (importable by workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import joblib
import psutil
import pydantic
from sklearn.linear_model import LogisticRegression

from tasktrace import Task


def busy_cpu(seconds: float) -> None:
    """Spin on the CPU for about ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def fold(i: int, cpu_s: float = 0.3) -> dict[str, float | int]:
    """Run a unit of user work in a Task; return this process's CPU seconds spent on it (psutil).

    The CPU is read with psutil (``/proc/<pid>/stat``) around the task, independently of
    tasktrace's own ``getrusage``, so tests can compare the two.
    """
    proc = psutil.Process()
    before = proc.cpu_times()
    with Task(f"fold {i}", fold=i):
        busy_cpu(cpu_s)
    after = proc.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"pid": os.getpid(), "cpu_s": cpu, "thread_cpu_s": cpu_s}


def failing_fold(i: int) -> int:
    """Run a task that fails for odd ``i`` (ValueError), after a little work."""
    with Task(f"fold {i}"):
        busy_cpu(0.01)
        if i % 2:
            raise ValueError(f"fold {i} is odd")
    return i


def fold_after(i: int, fail: bool, wait_for: str | None = None) -> int:
    """Run ``Task(f"fold {i}")``: wait for the file ``wait_for`` (if given), then fail if ``fail``.

    Lets a test decide when a worker's call ends. Raises ``ValueError`` ("fold ``i`` failed")
    if ``fail``; ``TimeoutError`` if ``wait_for`` does not appear within 60 s.
    """
    with Task(f"fold {i}", fold=i):
        deadline = time.monotonic() + 60.0
        while wait_for is not None and not os.path.exists(wait_for):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{wait_for} did not appear")
            time.sleep(0.005)
        if fail:
            raise ValueError(f"fold {i} failed")
    return i


def fold_sleeping(
    i: int, seconds: float, fail: bool, touch: str | None = None, wait_for: str | None = None
) -> int:
    """Run ``Task(f"fold {i}")``: create ``touch``, wait for ``wait_for``, sleep, maybe fail.

    The files (if given) let a test order two calls; raises ``ValueError`` ("fold ``i``
    failed") if ``fail``, ``TimeoutError`` if ``wait_for`` does not appear within 60 s.
    """
    with Task(f"fold {i}"):
        if touch is not None:
            Path(touch).touch()
        deadline = time.monotonic() + 60.0
        while wait_for is not None and not os.path.exists(wait_for):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{wait_for} did not appear")
            time.sleep(0.002)
        time.sleep(seconds)
        if fail:
            raise ValueError(f"fold {i} failed")
    return i


def fold_validating(i: int, value: object) -> int:
    """Run ``Task(f"fold {i}")`` validating ``value`` as an ``int`` with pydantic.

    Raises ``pydantic.ValidationError`` when it is not one: an exception whose pickling keeps
    no ``__dict__`` (an attribute set on it does not cross processes).
    """
    with Task(f"fold {i}", fold=i):
        return pydantic.TypeAdapter(int).validate_python(value)


def plain(i: int) -> int:
    """Work without any Task (the integration must not change it)."""
    return i * i


class TracedLogisticRegression(LogisticRegression):
    """scikit-learn's logistic regression whose ``fit`` is a Task (the user's one change)."""

    def fit(self, X, y, sample_weight=None):
        """Fit inside ``Task("fit")``."""
        with Task("fit", n_samples=len(y)):
            return super().fit(X, y, sample_weight=sample_weight)


def square_in_task(i: int) -> int:
    """Square ``i`` inside ``Task(f"square {i}")`` (a Dask / Ray task body)."""
    with Task(f"square {i}", item=i):
        busy_cpu(0.02)
        return i * i


def add_in_task(a: int, b: int) -> int:
    """Add two numbers inside ``Task("add")`` (a node of a ``dask.delayed`` graph)."""
    with Task("add"):
        return a + b


def die_once(marker: str) -> int:
    """Run ``Task("fragile")``: the first call ends its process (``os._exit``), later ones return.

    ``marker`` is a file whose existence says the first attempt happened (the test's two Ray
    nodes run on one machine, so both see it). The first attempt runs 0.5 s first: longer than
    the integrations' flush interval, so its start record has gone home when it dies.
    """
    with Task("fragile"):
        busy_cpu(0.5)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)
        return os.getpid()


class Accumulator:
    """A plain class for a Ray actor: each ``add`` runs in a Task."""

    def __init__(self) -> None:
        """Start at zero."""
        self.total = 0

    def add(self, n: int) -> int:
        """Add ``n`` inside ``Task(f"add {n}")``; return the total."""
        with Task(f"add {n}", n=n):
            self.total += n
            return self.total


def slow_in_task(seconds: float) -> float:
    """Run ``Task("slow")`` for about ``seconds`` of CPU; return ``seconds``."""
    with Task("slow"):
        busy_cpu(seconds)
    return seconds


def outer_in_task(n: int) -> int:
    """Inside ``Task("outer")``, call :func:`square_in_task` as a Ray remote function (nested)."""
    import ray

    inner = ray.remote(num_cpus=0)(square_in_task)
    with Task("outer"):
        return int(ray.get(inner.remote(n)))


def nested_leaf(name: str, cpu_s: float = 0.05) -> float:
    """Run ``Task(f"inner {name}")`` for ``cpu_s`` of this thread's CPU; return ``cpu_s``."""
    with Task(f"inner {name}"):
        busy_cpu(cpu_s)
    return cpu_s


def nested_outer(i: int, n_jobs: int = 2, backend: str | None = None) -> list[float]:
    """Inside ``Task(f"outer {i}")``, run ``inner {i}.0`` and ``.1`` in a nested ``Parallel``.

    ``backend=None``: the backend joblib picks for a nested call (the user names none).
    """
    with Task(f"outer {i}"):
        return list(
            joblib.Parallel(n_jobs=n_jobs, backend=backend)(
                joblib.delayed(nested_leaf)(f"{i}.{j}") for j in range(2)
            )
        )


def _middle(name: str) -> list[float]:
    with Task(f"middle {name}"):
        return nested_parallel(name)


def nested_parallel(name: str) -> list[float]:
    """Run ``inner {name}.0`` and ``.1`` in a ``Parallel(n_jobs=2)`` (joblib's backend choice)."""
    return list(
        joblib.Parallel(n_jobs=2)(joblib.delayed(nested_leaf)(f"{name}.{k}") for k in range(2))
    )


def nested_middle(i: int) -> list[list[float]]:
    """Inside ``Task(f"outer {i}")``, a sequential ``Parallel(n_jobs=1)`` of two middle tasks.

    Each middle task (``Task(f"middle {i}.{j}")``) runs :func:`nested_parallel`: a call below
    a sequential one gets the backend the sequential one passes on.
    """
    with Task(f"outer {i}"):
        return list(
            joblib.Parallel(n_jobs=1)(joblib.delayed(_middle)(f"{i}.{j}") for j in range(2))
        )
