"""tasktrace: measure units of work and publish them as OpenTelemetry traces.

``with Task("train model"):`` measures wall time, CPU time, peak memory, peak GPU memory and
energy, records the task as an OpenTelemetry span, and (with ``file=``) writes the task tree as
JSON in LensKit's task-file format.

:func:`read_tasks` (pandas) and :func:`report` (plotly) need optional extras and are imported
on first use, so ``import tasktrace`` imports neither pandas nor plotly.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from tasktrace._config import configure
from tasktrace._subprocess import child_environment
from tasktrace._task import Task, TaskStatus
from tasktrace.core.context import ContextThread, ContextThreadPoolExecutor, with_current_context

__version__ = "0.1.0"
"""The package version."""

__all__ = [
    "ContextThread",
    "ContextThreadPoolExecutor",
    "Task",
    "TaskStatus",
    "__version__",
    "child_environment",
    "configure",
    "read_tasks",
    "report",
    "with_current_context",
]

_LAZY = {
    "read_tasks": "tasktrace.formats.frame",  # the pandas extra
    "report": "tasktrace.formats.report",  # the report extra (plotly)
}


def __getattr__(name: str) -> _typing.Any:
    """Import :func:`read_tasks` and :func:`report` on first use (their extras are optional).

    Raises:
        ImportError: The extra is not installed (the message names it).
        AttributeError: ``name`` is not an attribute of tasktrace.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tasktrace' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value
