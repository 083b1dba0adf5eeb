"""tasktrace: measure units of work and publish them as OpenTelemetry traces.

``with Task("train model"):`` measures wall time, CPU time, peak memory, peak GPU memory and
energy, records the task as an OpenTelemetry span, and (with ``file=``) writes the task tree as
JSON in LensKit's task-file format.

:func:`read_tasks` (pandas) and :func:`report` (plotly) need optional extras and are imported
on first use, so ``import tasktrace`` imports neither pandas nor plotly.

The package is built in layers, each importing only the layers below it (see
:doc:`/architecture`): ``core``, ``meters``, ``tree``, ``export``, ``task``, ``formats``,
``cli``.
"""

from __future__ import annotations

# First: filters the OpenTelemetry SDK's parsers of the OTEL_* variables, which quote what they
# cannot parse (secrets included), before anything imports pydantic (see its docstring).
from tasktrace.export import environment as _environment  # isort: skip

import importlib as _importlib
import typing as _typing

from tasktrace.core.context import ContextThread, ContextThreadPoolExecutor, with_current_context
from tasktrace.core.version import VERSION as __version__
from tasktrace.export.config import configure
from tasktrace.task import Task, TaskStatus
from tasktrace.task.processes import child_environment

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

del _environment

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
