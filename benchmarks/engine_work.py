"""The benchmark's unit of work for the engines: 1 ms of CPU, with or without a task.

Kept in its own module so that engine workers import it by name; the plain function imports
nothing from tasktrace (the reference runs without tasktrace at all).
"""

from __future__ import annotations

import time

CALL_S = 0.001
"""Wall seconds each call spins for."""


def noop_tracing_hook() -> None:
    """Do nothing, as a Ray tracing start-up hook: Ray's own tracing path, no tasktrace.

    With any hook set, Ray wraps every remote call in its tracing code (a producer span in the
    driver, the context as a ``_ray_trace_ctx`` argument, a consumer span in the worker); the
    engines benchmark measures that part alone with this hook.
    """


def spin(i: int) -> int:
    """Spin on the CPU for :data:`CALL_S` seconds of wall time; return ``i``."""
    end = time.perf_counter() + CALL_S
    while time.perf_counter() < end:
        pass
    return i
