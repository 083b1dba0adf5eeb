"""The sink of a remote scope's root tasks (see :class:`tasktrace.task.carriers.RemoteScope`).

Thread-safety: see :class:`RootSink`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tasktrace.core.record import TaskRecord, own_containers
from tasktrace.core.status import TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.tree.processor import tree

__all__ = ["RootSink"]

_warn = WarnOnce(logging.getLogger(__name__))


class RootSink:
    """A remote scope's root tasks, handed over at their start and finish (their record sink).

    The tree writer's registry (process-wide) holds the sink of the stand-in and of every
    root: the sink holds the stand-in only weakly (:attr:`parent`), so a scope whose work is
    done is freed by reference counting, with no cycle through the registry and no garbage
    left for the collector.

    Args:
        data: Extra data (JSON values, already normalised) set on every root at its start.
        on_started: Called with a root (running) right after it started; must not raise.
        on_finished: Called with a finished root and its record (task JSON); must not raise.
        keep: Keep finished records in :attr:`finished` (when ``on_finished`` is not given).
        call_data: Returns more extra data for each root, at its start (JSON values).

    Attributes:
        running: The roots still running, by ``task_id`` (guarded by :attr:`lock`).
        finished: Finished roots kept for the scope's ``take`` (guarded by :attr:`lock`);
            serialised when taken, all in one go (one record per root serialised between
            two user calls costs several times more CPU, with the caches cold).
        roots_started: How many roots started.
        parent: Returns the scope's stand-in, or ``None`` once it was freed.

    Thread-safety: called from any thread that starts or finishes a root.
    """

    __slots__ = (
        "call_data",
        "data",
        "finished",
        "keep",
        "lock",
        "on_finished",
        "on_started",
        "parent",
        "roots_started",
        "running",
    )

    def __init__(
        self,
        data: dict[str, Any],
        on_started: Callable[[TaskRecord], None] | None,
        on_finished: Callable[[TaskRecord, bytes], None] | None,
        keep: bool,
        call_data: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Create an empty sink (its :attr:`parent` is set by the scope)."""
        self.data = data
        self.call_data = call_data
        self.on_started = on_started
        self.on_finished = on_finished
        self.keep = keep
        self.lock = threading.Lock()
        self.finished: list[TaskRecord] = []
        self.running: dict[uuid.UUID, TaskRecord] = {}
        self.roots_started = 0
        self.parent: Callable[[], TaskRecord | None] = lambda: None  # the stand-in, weakly

    def __call__(self, task: TaskRecord) -> None:
        """Take ``task`` (a root) at its start (note it) or finish (serialise and hand it on)."""
        if task.status is TaskStatus.RUNNING:
            if task.task_id in self.running:
                return  # a refresh of a root that also has a file of its own
            with self.lock:
                self.running[task.task_id] = task
                self.roots_started += 1
            if self.data or self.call_data is not None:
                own_containers(task)  # a Task("label") shares the read-only empty extra
                extra = task.__pydantic_extra__
                if extra is None:
                    task.__pydantic_extra__ = extra = {}
                extra.update(self.data)  # checked once, when the scope was made
                if self.call_data is not None:
                    try:
                        extra.update(self.call_data())
                    except Exception as e:  # noqa: BLE001 - must not break the user's task
                        _warn("call-data", "tasktrace: a remote scope's call data failed: %r", e)
            if self.on_started is not None:
                self.on_started(task)
            return
        with self.lock:
            self.running.pop(task.task_id, None)
        parent = self.parent()
        on_finished = self.on_finished
        with tree.lock:
            subtasks = parent.subtasks if parent is not None else []
            for i in range(len(subtasks) - 1, -1, -1):  # the stand-in lets finished roots go
                if subtasks[i] is task:
                    del subtasks[i]
                    break
            record = tree.snapshot(task) if on_finished is not None else None
        if on_finished is not None:
            if record is not None:
                on_finished(task, record)
        elif self.keep:
            with self.lock:
                self.finished.append(task)  # serialised when taken
