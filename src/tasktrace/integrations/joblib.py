"""joblib (and scikit-learn's ``n_jobs``): batches carry the submitting task; records return.

Set-up, once in the driver::

    import joblib
    import tasktrace.integrations.joblib  # registers the "tasktrace" backend
    joblib.parallel_config(backend="tasktrace")          # loky; inner="threading" etc.

or :func:`instrument` to trace every joblib backend by its usual name (``Parallel(backend=
"threading")``, scikit-learn's thread fallbacks).

How it works: joblib hands each batch of calls to the backend's ``submit``. The traced backends
(subclasses of joblib's ``LokyBackend``, ``MultiprocessingBackend`` and ``ThreadingBackend``)
wrap the batch in a picklable :class:`CarriedBatch` holding the submitting task's carrier. In a
worker process the batch runs in a remote scope, so a ``Task`` started by the worker function is
a subprocess subtask of the submitting task, in the same trace; the batch returns its results
together with the finished tasks' records; a failing batch returns its exception beside them
(with its worker traceback, as joblib ships it), and the driver raises it after the delivery, so
joblib sees the same error as without tasktrace. (Records attached to the exception instead were
lost whenever its pickling drops its ``__dict__``, as pydantic's ``ValidationError`` does.) The
records are taken by the completion callback the backend registers for the batch, before
joblib's own callback runs (joblib's skips retrieving the result of a batch that completes
after another batch of the same call failed: records taken in ``retrieve_result_callback``
alone lost those), and delivered to the tree many in a row at the end of the call. In the
thread backend the batch runs in a copy of the submitter's context, as
:class:`tasktrace.ContextThreadPoolExecutor` does.

Settings: loky workers get the driver's export set-up (``OTEL_*`` and :func:`tasktrace.configure`)
in their environment; ``multiprocessing`` workers are forked with it; threads share it.

Nested calls: a ``Parallel`` call made inside a batch without a backend of its own runs with
joblib's nested backend (threads one level down, then sequential), traced (the backends'
``get_nested_backend``): its tasks are subtasks of the task that made it, in the worker's
record. A backend named there (``backend="threading"``) is joblib's plain one
(:func:`instrument` registers the names in the driver only): its threads' tasks are cut off,
which tasktrace's warning for a thread's task with no parent says in the worker too.

Limits: a batch returns its records when it ends, so the records of a batch that has not ended
when its worker is killed are lost: its running task and the tasks it finished before
(``batch_size`` > 1).
joblib kills the workers when a call fails or is interrupted (loky ``terminate(kill_workers=
True)``, ``multiprocessing`` ``Pool.terminate()``) as soon as the calling thread sees the error
(it looks every 10 ms). The traced backend's ``abort_everything`` first tells the queued batches
not to start (a worker taking one runs nothing of it) and waits up to :data:`ABORT_GRACE_S` for
the started batches still out, so a batch that ends meanwhile (or whose result is on its way)
comes home; the started batches that did not come home are lost with their workers, which a
warning says (once per process, with their number and that of the queued ones, which lose
nothing). Each worker tells the driver which batches it started through a file per batch
(:mod:`tasktrace.integrations.joblib_calls`). Every batch that ended before, failed or not, is
in the tree. Bringing the others' records home would take a channel from the workers besides
joblib's results (none is shipped). A driver stopped by ``SIGTERM`` dies without joblib
aborting (loky's workers live on): tasktrace's handler marks the open calls aborting and warns
what is lost (:func:`~tasktrace.integrations.joblib_calls.abort_open_calls`).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    LokyBackend,
    MultiprocessingBackend,
    ParallelBackendBase,
    ThreadingBackend,
)
from joblib.externals.loky.process_executor import _ExceptionWithTraceback

from tasktrace.core.warn import WarnOnce
from tasktrace.export.workers import worker_environment
from tasktrace.integrations.joblib_calls import (
    INBOX,
    CallBook,
    ContextBatch,
    DeliveringCallback,
    Homecoming,
    batch_starts,
)
from tasktrace.task.carriers import Carrier, RemoteScope, capture, remote_scope
from tasktrace.task.scope_cache import ScopeCache
from tasktrace.tree.delivery import deliver

__all__ = [
    "ABORT_GRACE_S",
    "BACKEND_NAME",
    "CarriedBatch",
    "TracedLokyBackend",
    "TracedMultiprocessingBackend",
    "TracedThreadingBackend",
    "instrument",
    "tasktrace_backend",
]

_warn = WarnOnce(logging.getLogger(__name__))

ABORT_GRACE_S: Final = 0.25
"""Seconds a failing call waits for its carried batches still out before joblib stops the
workers: a batch that ended as the call failed comes home with its records."""
BACKEND_NAME: Final = "tasktrace"
"""The name :func:`joblib.parallel_config` knows the traced backend by."""


class CarriedBatch:
    """A joblib batch (``BatchedCalls``) that runs under the submitting task's carrier.

    Picklable as long as the batch is. Calling it in another process returns a
    :class:`Homecoming`, also when the batch raised (the exception travels in it, beside the
    records of the tasks that ran before and with it); in the submitting process itself the
    batch's results are returned and its exception propagates.
    """

    __slots__ = ("batch", "carrier", "mark", "reused")

    def __init__(
        self,
        batch: Callable[[], Any],
        carrier: Carrier,
        reused: bool = False,
        mark: str | None = None,
    ) -> None:
        """Wrap ``batch`` with ``carrier`` (from :func:`tasktrace.task.carriers.capture`).

        ``reused``: in a worker that ends by ``sys.exit`` (loky's: its exit handler exports
        what is left), flush the spans only when the last flush is :data:`FLUSH_EVERY_S` old;
        else (``multiprocessing``'s end by ``os._exit``) after every batch. ``mark``: the
        batch's start mark (:func:`~tasktrace.integrations.joblib_calls.batch_starts`), made
        in another process as the batch starts, so that the driver knows it started.
        """
        self.batch = batch
        self.carrier = carrier
        self.reused = reused
        self.mark = mark

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the batch, the carrier's text form, the worker kind and the start mark.

        The carrier travels as :meth:`~tasktrace.task.carriers.Carrier.to_headers` (a dict of
        strings, made once per carrier), which the pickler writes itself: the dataclass, with
        its ``UUID``, went through loky's cloudpickle reducer object by object, which doubled
        the pickling of a batch of eight calls (97 µs instead of 50 on this project's VMs).
        The worker gets the same carrier object back for the same headers
        (:meth:`~tasktrace.task.carriers.Carrier.from_headers` remembers them).
        """
        return (_carried, (self.batch, self.carrier.to_headers(), self.reused, self.mark))

    def __len__(self) -> int:
        """Return the number of calls in the batch (joblib's batch statistics read it)."""
        return len(self.batch)  # type: ignore[arg-type]

    def __call__(self) -> Any:
        """Run the batch in a remote scope; return its results (or error) and records.

        The scope is the worker's one scope of the carrier (:data:`_scopes`), made at its
        first batch and reused by the later ones (a worker runs one batch at a time).
        """
        global _last_flush  # noqa: PLW0603 - one figure per worker process
        carrier = self.carrier
        if self.mark is not None and not carrier.here and not batch_starts(self.mark):
            return Homecoming(None, [], _ExceptionWithTraceback(_NotRun()))  # the call aborts
        scope = None if carrier.here else _scopes.get(carrier)
        flush = True
        if self.reused:
            now = time.monotonic()
            flush = now - _last_flush >= FLUSH_EVERY_S
            if flush:
                _last_flush = now
        with remote_scope(carrier, scope=scope, flush=flush) as scope:
            try:
                results = self.batch()
            except BaseException as e:
                if scope is None:
                    raise
                return Homecoming(None, scope.take(), _ExceptionWithTraceback(e))
            if scope is None:  # the submitting process itself: the tree is already whole
                return results
            return Homecoming(results, scope.take())


def _carried(
    batch: Callable[[], Any], headers: dict[str, str], reused: bool, mark: str | None
) -> CarriedBatch:
    """Rebuild a :class:`CarriedBatch` pickled by its ``__reduce__`` (the carrier as text)."""
    carrier = Carrier.from_headers(headers)
    if carrier is None:  # never: the headers are a carrier's own
        raise ValueError("a carried joblib batch without its carrier")
    return CarriedBatch(batch, carrier, reused, mark)


class _NotRun(Exception):
    """A batch queued when its call failed, not run (joblib drops its outcome)."""


FLUSH_EVERY_S: Final = 1.0
"""Seconds between two flushes of a loky worker's spans after a batch (each waits for the
exporters); the batch processor and the worker's exit handler export the rest. A worker killed
by joblib loses the spans of the batches since (their records are in the tree)."""
_last_flush = 0.0  # time.monotonic() of this worker's last flush after a batch


_scopes: Final = ScopeCache(RemoteScope)
"""A worker's remote scopes, one per submitting task (made at its first batch, then reused;
a scope per batch cost ~20 µs more CPU per batch in a worker between calls)."""


class _Traced(ParallelBackendBase):
    """The hooks shared by the traced backends (a mixin, first in the MRO).

    joblib dispatches the first batches from the thread calling ``Parallel`` and later ones
    from its result-callback thread, where no task is current: the carrier (or, for threads,
    the context) is therefore captured once per call, in :meth:`start_call`, which joblib runs
    in the calling thread.
    """

    _tasktrace_carrier: Carrier | None = None
    _tasktrace_context: contextvars.Context | None = None
    _tasktrace_book: CallBook | None = None  # the call's carried batches
    _tasktrace_reused_workers = False  # see CarriedBatch (loky's workers: True)

    def start_call(self) -> None:
        """At the start of a ``Parallel`` call, in its thread: capture the current task."""
        if getattr(self, "uses_threads", False):
            self._tasktrace_context = contextvars.copy_context()
        else:
            self._tasktrace_carrier = capture()
            self._tasktrace_book = None  # made at the first carried batch
        super().start_call()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Let started batches on their way home land, then let joblib stop the workers.

        joblib calls it when a call failed or was interrupted. Queued batches are told not to
        start (:meth:`~tasktrace.integrations.joblib_calls.CallBook.aborting`); the driver
        waits at most :data:`ABORT_GRACE_S` for the started batches still out (a batch that
        ended as the call failed, its result in transit). After joblib stopped the workers, a
        warning (once per process) says how many started batches did not come home: their
        tasks' records are lost. Queued batches lose nothing; no warning when none was lost.
        """
        book = self._tasktrace_book
        if book is None:
            super().abort_everything(ensure_ready=ensure_ready)
            return
        book.aborting()
        deadline = time.monotonic() + ABORT_GRACE_S
        while book.running_out() and time.monotonic() < deadline:
            time.sleep(0.005)
        super().abort_everything(ensure_ready=ensure_ready)
        running, queued, unknown = book.lost()
        if running:
            _warn(
                "joblib-abort",
                "tasktrace: a joblib call stopped with %d batch(es) of tasks running; joblib "
                "stopped their workers, so those tasks' records are lost (%d queued batch(es) "
                "had not started; every batch that ended is in the tree; said once per process)",
                running,
                queued,
            )
        elif unknown:
            _warn(
                "joblib-abort",
                "tasktrace: a joblib call stopped with %d batch(es) of tasks not back, running "
                "or queued (not known: %s); the records of those running are lost (every "
                "batch that ended is in the tree; said once per process)",
                unknown,
                book.why,
            )

    def stop_call(self) -> None:
        """At the end of a ``Parallel`` call: deliver its records; forget its task and batches."""
        super().stop_call()
        INBOX.deliver_held()  # parsed in a row here, not one by one in joblib's callback thread
        self._tasktrace_carrier = None
        self._tasktrace_context = None
        book, self._tasktrace_book = self._tasktrace_book, None
        if book is not None:
            book.close()

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Submit ``func`` (a batch) carrying the task captured at the call's start, if any."""
        context = self._tasktrace_context
        if context is not None:
            return super().submit(ContextBatch(func, context), callback)
        carrier = self._tasktrace_carrier
        if carrier is not None:
            mark = None
            if callback is not None:  # joblib's: how the batch's end is known
                book = self._tasktrace_book
                if book is None:
                    book = self._tasktrace_book = CallBook()
                seq, mark = book.submitted()
                callback = DeliveringCallback(callback, book, seq)
            func = CarriedBatch(func, carrier, self._tasktrace_reused_workers, mark)
        return super().submit(func, callback)

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Return the backend of ``Parallel`` calls made inside a batch: joblib's pick, traced.

        joblib picks a ``ThreadingBackend`` one level down (a worker's nested calls), then a
        ``SequentialBackend`` (the calling thread itself: returned as it is); the batch takes
        the pick to its worker. joblib's plain threads start from an empty context, so their
        tasks had no parent (missing from the tree, silently); the traced subclass runs each
        batch in the context of the nested call, under the task that made it.
        """
        backend, n_jobs = super().get_nested_backend()
        traced = _TRACED.get(type(backend))
        return (backend if traced is None else traced(nesting_level=backend.nesting_level)), n_jobs

    def retrieve_result_callback(self, out: Any) -> Any:
        """Return the batch's results, or raise its error; deliver any records left in it.

        The records are normally taken already, by the callback :meth:`submit` registered
        (which runs whether or not joblib retrieves the result).

        Raises:
            BaseException: What the batch raised in the worker (its traceback as ``__cause__``),
                or what joblib's backend raises for the batch.
        """
        result = super().retrieve_result_callback(out)
        if isinstance(result, Homecoming):
            records = result.take()
            if records:
                deliver(records)
            error = result.raised()
            if error is not None:
                raise error
            return result.results
        return result


class TracedLokyBackend(_Traced, LokyBackend):
    """joblib's ``loky`` backend, carrying the submitting task to its worker processes.

    Its workers start with this process's export set-up
    (:func:`~tasktrace.export.workers.worker_environment`: the ``OTEL_*`` variables and the
    :func:`tasktrace.configure` settings), so their spans go where the driver's go; loky
    starts new workers when that set-up changed.
    """

    _tasktrace_reused_workers = True  # they end by sys.exit: the exit handler flushes

    def _prepare_worker_env(self, n_jobs: int) -> dict[str, str]:
        """Return joblib's thread-limiting variables plus this process's export set-up."""
        return {**worker_environment(), **super()._prepare_worker_env(n_jobs)}


class TracedMultiprocessingBackend(_Traced, MultiprocessingBackend):
    """joblib's ``multiprocessing`` backend, carrying the submitting task to its workers."""


class TracedThreadingBackend(_Traced, ThreadingBackend):
    """joblib's ``threading`` backend, running each batch in the submitter's context."""


_INNER: Final[dict[str, type[ParallelBackendBase]]] = {
    "loky": TracedLokyBackend,
    "multiprocessing": TracedMultiprocessingBackend,
    "threading": TracedThreadingBackend,
}


# joblib's backends by their traced subclasses, for nested calls (_Traced.get_nested_backend)
_TRACED: Final = {cls.__bases__[1]: cls for cls in _INNER.values()}


def tasktrace_backend(inner: str = "loky", **backend_kwargs: Any) -> ParallelBackendBase:
    """Build the traced backend wrapping joblib's ``inner`` backend (joblib's factory).

    Args:
        inner: ``"loky"`` (the default), ``"multiprocessing"`` or ``"threading"``.
        **backend_kwargs: Passed to the backend, as joblib does.

    Raises:
        ValueError: ``inner`` is not one of the three names (the message lists them).
    """
    try:
        cls = _INNER[inner]
    except KeyError:
        raise ValueError(
            f"inner must be one of {sorted(_INNER)} for the {BACKEND_NAME!r} joblib backend, "
            f"not {inner!r}"
        ) from None
    return cls(**backend_kwargs)


def instrument() -> None:
    """Trace joblib's ``loky``, ``multiprocessing`` and ``threading`` backends by name.

    Registers the traced subclasses under joblib's own names, so ``Parallel(backend=
    "threading")``, the default backend and joblib's thread fallbacks (``require="sharedmem"``,
    ``prefer="threads"``) all carry the submitting task. Idempotent.
    """
    for name, cls in _INNER.items():
        register_parallel_backend(name, cls)


register_parallel_backend(BACKEND_NAME, tasktrace_backend)
