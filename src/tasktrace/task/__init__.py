"""The task layer: the :class:`~tasktrace.Task` façade and what drives it.

The façade (:mod:`tasktrace.task.facade`) sits on the layers it drives: the tree processor,
the exporters and the meters. See also :mod:`tasktrace.task.runtime` (the per-task runtime
record), :mod:`tasktrace.task.processes` (tasks across processes), :mod:`tasktrace.task.signals`
(``SIGTERM``) and :mod:`tasktrace.task.watch` (pending spans, task metrics).
"""

from tasktrace.task.facade import Task, TaskStatus

__all__ = ["Task", "TaskStatus"]
