"""Carrying the active task into worker threads.

The active task is per thread and per asyncio task: it lives in the OpenTelemetry context, a
:mod:`contextvars` variable. An asyncio task copies its creator's context, so tasks nest across
``asyncio.gather`` / ``create_task`` with nothing to do. A new thread starts from an *empty*
context, so work submitted to a thread must carry its submitter's context; these helpers do,
each call running in its own copy (one :class:`contextvars.Context` cannot be entered by two
threads at once).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

__all__ = ["ContextThread", "ContextThreadPoolExecutor", "with_current_context"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def with_current_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Return ``fn`` bound to the caller's current context (active task and span).

    Each call of the returned function runs ``fn`` in a fresh copy of the context captured
    now, so it may be called from several threads at once (``executor.map``).

    Example::

        with Task("evaluate"):
            results = list(pool.map(with_current_context(score), items))  # parents: evaluate

    Thread-safety: the returned function is safe to call from any thread.
    """
    captured = contextvars.copy_context()

    def run_in_context(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return captured.copy().run(fn, *args, **kwargs)

    run_in_context.__wrapped__ = fn  # type: ignore[attr-defined]
    return run_in_context


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A :class:`~concurrent.futures.ThreadPoolExecutor` whose work runs in the submitter's context.

    :meth:`submit` (and so :meth:`~concurrent.futures.Executor.map`) captures the context of the
    calling thread at submission: a task started by the work has the submitter's active task as
    its parent. Thread-safety: as the base class.
    """

    def submit(  # type: ignore[override]
        self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any
    ) -> Future[_R]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the current context; return its future."""
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class ContextThread(threading.Thread):
    """A :class:`threading.Thread` that runs in a copy of the context of the thread creating it.

    Args:
        group, target, name, args, kwargs, daemon: As for :class:`threading.Thread`.

    Thread-safety: as the base class.

    """

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        """Create the thread, capturing the current context (see the class docstring)."""
        super().__init__(group, target, name, args, kwargs, daemon=daemon)
        self._tasktrace_context = contextvars.copy_context()

    def run(self) -> None:
        """Run the thread's work (``target`` or an overriding ``run``) in the captured context."""
        self._tasktrace_context.run(super().run)
