"""The benchmark's unit of work inside a ``Task`` (the user's one change to the function)."""

from __future__ import annotations

from benchmarks.engine_work import spin
from tasktrace import Task


def spin_in_task(i: int) -> int:
    """Run :func:`~benchmarks.engine_work.spin` inside ``Task("call")``; return ``i``."""
    with Task("call"):
        return spin(i)
