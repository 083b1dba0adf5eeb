"""Carrying the active task into worker threads.

The active task is per thread and per asyncio task: it lives in the OpenTelemetry context, a
:mod:`contextvars` variable. An asyncio task copies its creator's context, so tasks nest across
``asyncio.gather`` / ``create_task`` with nothing to do. A new thread starts from an *empty*
context, so work submitted to a thread must carry its submitter's context; these helpers do,
each call running in its own copy (one :class:`contextvars.Context` cannot be entered by two
threads at once).

It also holds the rules for the active task itself. A task's context records the context that
was current when the task started. A generator runs in its consumer's context, so while it is
suspended inside ``with Task(...)`` its consumer's context holds the generator's task; if the
generator is then closed elsewhere (another thread or asyncio task, the garbage collector),
that task finishes without leaving the consumer's context. tasktrace therefore treats a
finished task found in a context as stale and skips it, back to the context current when it
started (:func:`live_context`), and ends a task's context only where it is still on top
(:func:`is_on_top`). A task that finishes under another one (``a.finish()`` while ``b``,
started in ``a``, runs) cannot leave its context then; when ``b`` leaves its own, what it
goes back to is ``a``'s finished context, and :func:`detach` goes on past it to the live
context, so that no finished task's context stays current where a task left its own.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_CONTEXT

from tasktrace.core.record import TaskRecord
from tasktrace.core.status import RUNNING

__all__ = [
    "OUTER_KEY",
    "SPAN_KEY",
    "TASK_KEY",
    "ContextThread",
    "ContextThreadPoolExecutor",
    "attach",
    "detach",
    "get_current",
    "is_on_top",
    "live_context",
    "task_context",
    "with_current_context",
]

TASK_KEY = otel_context.create_key("tasktrace.task")
"""Context key of the active task (a :class:`~tasktrace.Task`)."""
OUTER_KEY = otel_context.create_key("tasktrace.outer")
"""Context key of the context that was current when the active task started."""


def _span_key() -> str | None:
    """Return the key under which ``trace.set_span_in_context`` keeps the span."""
    keys = list(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context()))
    return keys[0] if len(keys) == 1 else None


SPAN_KEY: Final = _span_key()
"""The context key of the current span, as ``trace.set_span_in_context`` stores it (learnt
from it at import; ``None`` if an API version stored more than one key, and then the API's
own functions are used): a task's context is built in one dict, and its parent's span read
with one lookup, on every task."""


def _runtime_variable() -> contextvars.ContextVar[otel_context.Context] | None:
    """Return the variable that holds OpenTelemetry's current context, learnt from a token.

    OpenTelemetry's default runtime context keeps the current context in one
    :class:`contextvars.ContextVar`, whose ``get`` and ``set`` its ``get_current`` and
    ``attach`` call through two Python frames each; the token of an attachment names that
    variable (``Token.var``). ``None`` where ``OTEL_PYTHON_CONTEXT`` names a runtime context
    (any, even one built on a variable: a subclass of the default one may add to ``attach`` or
    ``get_current``, which the variable's own methods would skip): then the API's own
    functions are used, as they are where the token names no variable.
    """
    if os.environ.get(OTEL_PYTHON_CONTEXT):  # as the API decides whether to load one
        return None
    current = otel_context.get_current()
    token = otel_context.attach(current)
    var = getattr(token, "var", None)
    otel_context.detach(token)
    if isinstance(var, contextvars.ContextVar) and var.get() is current:
        return var
    return None


_CURRENT: Final = _runtime_variable()
get_current: Final[Callable[[], otel_context.Context]] = (
    otel_context.get_current if _CURRENT is None else _CURRENT.get
)
"""``opentelemetry.context.get_current``, as one C call where the runtime context is the
default one (see ``_runtime_variable``): read on every task's start."""
attach: Final[Callable[[otel_context.Context], object]] = (
    otel_context.attach if _CURRENT is None else _CURRENT.set
)
"""``opentelemetry.context.attach`` (its token is :func:`detach`'s), as one C call where the
runtime context is the default one: on every task's start."""


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

    def submit(self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> Future[_R]:
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


# ----- the active task ---------------------------------------------------------------------------


def task_context(
    task: TaskRecord, span: trace.Span, current: otel_context.Context | None = None
) -> otel_context.Context:
    """Return the current context with ``task`` and its ``span`` active (to attach at start).

    The context to go back to, should ``task`` be found stale, is the current one past any
    finished task (so that stale contexts never form a chain). ``current``: the current
    context, when the caller has it already.
    """
    if current is None:
        current = otel_context.get_current()
    outer = current
    found = current.get(TASK_KEY)
    if found is not None and found.status is not RUNNING:  # type: ignore[attr-defined]
        outer = live_context(current)[1]
    # One copy for the three keys (set_value for each would copy the context each time).
    if SPAN_KEY is None:  # pragma: no cover - an API that stores the span otherwise
        return otel_context.Context(
            {**trace.set_span_in_context(span, current), TASK_KEY: task, OUTER_KEY: outer}
        )
    return otel_context.Context({**current, SPAN_KEY: span, TASK_KEY: task, OUTER_KEY: outer})


def live_context(
    ctx: otel_context.Context,
) -> tuple[TaskRecord | None, otel_context.Context]:
    """Return the running task of ``ctx`` and the context for a new span started there.

    A task found in ``ctx`` that has finished (elsewhere: see the module docstring) is skipped,
    for the context that was current when it started, until a running task or none is found;
    its ended span is skipped with it. A span still recording on top of a finished task (a
    user's span, started after that task finished elsewhere) stays the parent of new spans.
    """
    task: TaskRecord | None = otel_context.get_value(TASK_KEY, ctx)  # type: ignore[assignment]
    span_ctx = None
    while task is not None and task.status is not RUNNING:
        if span_ctx is None and trace.get_current_span(ctx).is_recording():
            span_ctx = ctx
        outer = otel_context.get_value(OUTER_KEY, ctx)
        ctx = outer if isinstance(outer, otel_context.Context) else otel_context.Context()
        task = otel_context.get_value(TASK_KEY, ctx)  # type: ignore[assignment]
    return task, (ctx if span_ctx is None else span_ctx)


def is_on_top(mine: otel_context.Context) -> bool:
    """Whether ``mine`` is the current context, or under contexts of finished tasks only.

    A finishing task resets the context to what it was before the task only then: never
    while a running task's or a user's span's context is above it (a span still recording
    over a finished task is a user's: a task's span has ended when its task finished).
    """
    ctx: object = otel_context.get_current()
    while ctx is not mine:
        if not isinstance(ctx, otel_context.Context):
            return False
        task: TaskRecord | None = ctx.get(TASK_KEY)  # type: ignore[assignment]
        if task is None or task.status is RUNNING or trace.get_current_span(ctx).is_recording():
            return False
        ctx = ctx.get(OUTER_KEY)
    return True


def detach(token: object, mine: otel_context.Context | None) -> None:
    """Leave the context ``mine`` that a finishing task attached with ``token``, where it may.

    Only when ``mine`` is on top (:func:`is_on_top`): a running task's or a user's span's
    context above it, or finishing in another thread or asyncio task, leaves the current
    context alone (the task is then skipped as stale where it is found, see
    :func:`live_context`). Where the context it goes back to is a finished task's (one that
    finished while this task ran above it, or finished elsewhere), it goes on past it to the
    live context (:func:`live_context`: a running task's, a user's span still recording, or
    none); in a copy of the Context that attached ``mine`` (another asyncio task or thread),
    where ``mine`` cannot be reset, it goes to the live context at once. A task finishing in
    order goes back to its running parent's context: one check of that parent's status, no
    more work than the reset.
    """
    if token is None or mine is None:
        return
    if token.__class__ is _Token and token.var is _CURRENT:
        var: Any = _CURRENT  # the default runtime's variable (see get_current): the usual
        reset = var.reset
    else:
        var = getattr(token, "var", None)
        reset = getattr(var, "reset", None)
    if reset is None:  # a context runtime other than OpenTelemetry's contextvars one
        if otel_context.get_current() is mine or is_on_top(mine):
            otel_context.detach(token)  # type: ignore[arg-type]
        return
    if var.get() is not mine and not is_on_top(mine):  # the current context
        return
    # Our context is current here, but this may be a copy of the Context that attached it
    # (an asyncio task or thread started while the task ran: ValueError): then go to the live
    # context in this copy. OpenTelemetry's detach would log "Failed to detach context" at
    # ERROR for that.
    try:
        reset(token)
    except (ValueError, RuntimeError):
        _go_live(var, otel_context.get_current())
        return
    back = token.old_value  # type: ignore[attr-defined]
    task = back.get(TASK_KEY) if back is not _MISSING else None
    if task is not None and task.status is not RUNNING:  # back to a finished task's context
        _go_live(var, back)


_Token: Final = contextvars.Token
_MISSING: Final = contextvars.Token.MISSING
"""A token's ``old_value`` where the variable had no value in that Context before."""


def _go_live(var: Any, ctx: otel_context.Context) -> None:
    """Make the live context past ``ctx``'s finished tasks current (``ctx`` is current)."""
    live = live_context(ctx)[1]
    if live is not ctx:
        var.set(live)  # no token: nothing resets it, as nothing resets what it replaces
