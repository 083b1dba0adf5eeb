"""tasktrace: measure units of work and publish them as OpenTelemetry traces.

``with Task("train model"):`` measures wall time, CPU time, peak memory, peak GPU memory and
energy, records the task as an OpenTelemetry span, and (with ``file=``) writes the task tree as
JSON in LensKit's task-file format.
"""

from __future__ import annotations

from tasktrace._config import configure
from tasktrace._context import ContextThread, ContextThreadPoolExecutor, with_current_context
from tasktrace._subprocess import child_environment
from tasktrace._task import Task, TaskStatus

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
    "with_current_context",
]
