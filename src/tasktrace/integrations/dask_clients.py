"""The Dask integration's client wrappers: submissions carry the running task (see :mod:`.dask`).

Two kinds of clients carry the running task as a Dask annotation (:data:`ANNOTATION`):

- **In the driver**, the client given to :func:`tasktrace.integrations.dask.setup`: its methods
  are wrapped on *that object* (:func:`wrap_client`), and it also collects the workers' records
  before it closes (an asynchronous client too, whether by ``await client.close()`` or
  ``async with``).
- **In a worker process**, every ``distributed.Client``: the worker plugin wraps the class's
  submitting methods once (:func:`carry_every_client`), so a client a task gets there
  (``get_client()``, ``worker_client()``, ``Client(address)``) makes the work it submits
  subtasks of the worker's running task. Their records travel home as every worker task's do
  (the worker that runs them sends them to the driver's client as events), and the driver
  attaches them under the worker task's record by its id
  (:func:`tasktrace.tree.delivery.deliver`).

A submission made with no task running is left as it is (no annotation).

Thread-safety: the wrappers may be called from any thread (Dask's annotations are a context
variable: concurrent submissions of two tasks do not mix their carriers).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

import dask
from distributed import Client

from tasktrace.task.carriers import Carrier, capture

__all__ = [
    "ANNOTATION",
    "ASYNC_CLOSING_METHOD",
    "CLOSING_METHODS",
    "SUBMITTING_METHODS",
    "annotating",
    "carry_every_client",
    "wrap_client",
]

ANNOTATION: Final = "tasktrace"
"""The Dask task annotation holding the submitting task's carrier (text form)."""
SUBMITTING_METHODS: Final = ("submit", "map", "compute", "persist", "get")
"""The client methods wrapped to annotate submissions with the carrier (``get`` is what
``dask.compute`` and ``.compute()`` call)."""
CLOSING_METHODS: Final = ("close", "shutdown")
"""The client methods :func:`wrap_client` wraps to collect the workers' records before they run."""
ASYNC_CLOSING_METHOD: Final = "_close"
"""The coroutine method that closes an asynchronous client, whichever way it is closed
(``await client.close()`` and ``async with`` reach it): :func:`wrap_client` wraps it on an
asynchronous client to collect the workers' records before it runs."""
_MARK: Final = "__tasktrace_wrapped__"
_CLASS_MARK: Final = "__tasktrace_class_wrapped__"


def annotating(
    method: Callable[..., Any], on_carrier: Callable[[Carrier], None] | None = None
) -> Callable[..., Any]:
    """Return ``method`` made to submit inside ``dask.annotate`` with the running task's carrier.

    Args:
        method: A submitting method (bound, or the class's function).
        on_carrier: Called with the carrier before each annotated submission (the driver notes
            the submitting task); must not raise.
    """

    @functools.wraps(method)
    def submit_with_carrier(*args: Any, **kwargs: Any) -> Any:
        carrier = capture()
        if carrier is None:
            return method(*args, **kwargs)
        if on_carrier is not None:
            on_carrier(carrier)
        with dask.annotate(**{ANNOTATION: carrier.to_headers()}):
            return method(*args, **kwargs)

    return submit_with_carrier


def _closing(
    method: Callable[..., Any], client: Client, before: Callable[[Client], None]
) -> Callable[..., Any]:
    ref = weakref.ref(client)

    @functools.wraps(method)
    def close_after_collecting(*args: Any, **kwargs: Any) -> Any:
        c = ref()
        if c is not None:
            before(c)
        return method(*args, **kwargs)

    return close_after_collecting


def _closing_async(
    method: Callable[..., Awaitable[Any]],
    client: Client,
    before: Callable[[Client], Awaitable[None]],
) -> Callable[..., Awaitable[Any]]:
    ref = weakref.ref(client)

    @functools.wraps(method)
    async def close_after_collecting(*args: Any, **kwargs: Any) -> Any:
        c = ref()
        if c is not None:
            await before(c)
        return await method(*args, **kwargs)

    return close_after_collecting


def wrap_client(
    client: Client,
    on_carrier: Callable[[Carrier], None],
    before_close: Callable[[Client], None],
    before_close_async: Callable[[Client], Awaitable[None]],
) -> None:
    """Wrap ``client``'s :data:`SUBMITTING_METHODS` and :data:`CLOSING_METHODS` (this object).

    An asynchronous client (``client.asynchronous`` at the call) also has its
    :data:`ASYNC_CLOSING_METHOD` wrapped, to await ``before_close_async`` first.

    Args:
        client: The driver's client.
        on_carrier: See :func:`annotating`.
        before_close: Called with the client before it closes; must not raise.
        before_close_async: Awaited with an asynchronous client before it closes; must not
            raise.

    Wrapping again is harmless (a method wrapped before is left as it is).
    """
    for name in SUBMITTING_METHODS:
        method = getattr(client, name)
        if not getattr(method, _MARK, False):
            wrapped = annotating(method, on_carrier)
            setattr(wrapped, _MARK, True)
            setattr(client, name, wrapped)
    for name in CLOSING_METHODS:
        method = getattr(client, name)
        if not getattr(method, _MARK, False):
            wrapped = _closing(method, client, before_close)
            setattr(wrapped, _MARK, True)
            setattr(client, name, wrapped)
    method = getattr(client, ASYNC_CLOSING_METHOD, None)
    if client.asynchronous and method is not None and not getattr(method, _MARK, False):
        wrapped = _closing_async(method, client, before_close_async)
        setattr(wrapped, _MARK, True)
        setattr(client, ASYNC_CLOSING_METHOD, wrapped)


_class_lock = threading.Lock()


def carry_every_client() -> None:
    """Wrap ``distributed.Client``'s :data:`SUBMITTING_METHODS` for every client of this process.

    Called by the worker plugin in a worker process (not in the driver's, whose clients are
    only those given to ``setup``): work a worker's task submits through any client carries
    that task. Idempotent; a client's own wrapped methods (:func:`wrap_client`) stay as they are.
    """
    with _class_lock:
        for name in SUBMITTING_METHODS:
            method = getattr(Client, name)
            if not getattr(method, _CLASS_MARK, False):
                wrapped = annotating(method)
                setattr(wrapped, _CLASS_MARK, True)
                setattr(Client, name, wrapped)
