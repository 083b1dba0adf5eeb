"""One joblib call's carried batches: which came home, which were lost running, which queued.

joblib hands the traced backend more batches than it has workers (``pre_dispatch``, and loky
queues one more call than it has workers): when a call fails or is interrupted, the batches not
back are partly *running* (a worker started them: their tasks' records are lost when joblib
kills it) and partly *queued* (never started: nothing of theirs is lost). The driver cannot
tell them apart from joblib's futures (loky marks a queued call as running), so each carried
batch tells it, through a file:

- the call gets a folder of its own (:class:`CallBook`, in ``/dev/shm`` where it can, else
  under the spool folder), removed at the call's end;
- a worker starting a batch creates the batch's *start mark* there (:func:`batch_starts`), one
  ``open`` per batch (32 µs in ``/dev/shm`` here, 160 µs on a disk);
- when the call aborts, the driver first creates the folder's *aborting mark*: a worker that
  takes a queued batch after that runs nothing of it (joblib drops its results and kills the
  worker anyway), so no task starts only to be lost;
- after joblib stopped the workers, the batches that did not come home with a start mark were
  running (their records are lost: :meth:`CallBook.lost` says how many), the others queued;
- when the driver is stopped by ``SIGTERM`` (tasktrace's handler, the program having none),
  joblib is not asked to abort: :func:`abort_open_calls`, run by the handler
  (:func:`tasktrace.task.signals.on_sigterm`), makes every open call's aborting mark, so loky's
  workers, which outlive the driver, start none of its queued batches, and warns how many
  started batches' records are lost (their results cannot reach a dead driver).

The traced thread backend's batches need none of this: :class:`ContextBatch` runs each in the
calling thread's context.

Thread-safety: :class:`CallBook`'s methods may be called from any thread (joblib's callbacks
run in its result threads), and from a signal handler in the main thread (its lock is
re-entrant: the handler may run while the main thread holds it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import itertools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any, Final

from tasktrace.core.warn import WarnOnce
from tasktrace.task.signals import on_sigterm
from tasktrace.tree.delivery import RecordInbox
from tasktrace.tree.spool import spool_folder

__all__ = [
    "ABORTING",
    "INBOX",
    "MARKS_PREFIX",
    "CallBook",
    "ContextBatch",
    "DeliveringCallback",
    "Homecoming",
    "abort_open_calls",
    "batch_starts",
    "sweep_marks",
]

_warn = WarnOnce(logging.getLogger("tasktrace.integrations.joblib"))

ABORTING = "aborting"
"""Name of the mark, in a call's folder, that the call is aborting (no batch starts after it)."""


def batch_starts(mark: str) -> bool:
    """In a worker: say that the batch with start mark ``mark`` starts; ``False``: do not run it.

    ``False`` when the call is aborting (its folder holds :data:`ABORTING`): the batch was
    queued when the call failed. The aborting mark is looked at before the start mark is
    made, so a batch is either counted as started by the driver or not run at all. ``False``
    too when the call's folder is gone: the call is over (removed at its end), or its driver
    died and a later driver's :func:`sweep_marks` removed it, taking the aborting mark with it
    (a batch started then has nobody to return to). A mark that cannot be made for another
    reason (no permission) lets the batch run.
    """
    if os.path.exists(os.path.join(os.path.dirname(mark), ABORTING)):
        return False
    try:
        _make(mark)
    except FileNotFoundError:  # the folder is gone: see above
        return False
    except OSError:
        pass
    return True


def _make(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _touch(path: str) -> None:
    with contextlib.suppress(OSError):  # the folder is gone: the call ended
        _make(path)


MARKS_PREFIX = "tasktrace-joblib-"
"""The start of a call's folder of marks, followed by the driver's pid and a dash."""


@functools.cache
def _marks_root() -> str:
    """Where calls' folders of marks go: ``/dev/shm`` (memory) where it can be written to.

    A mark is made for every batch: on a disk file system (ext4 on this project's VMs) it cost
    160 µs a batch and a call's folder 340 µs, in ``/dev/shm`` 32 µs and 27 µs (measured): the
    joblib benchmark's 1 ms calls were 5 % slower with marks on disk. Elsewhere (no
    ``/dev/shm``: macOS, a read-only one), the spool folder. A driver stopped by a signal
    leaves its folder of empty files there (``tasktrace-joblib-<pid>-*``): the first call of
    a later driver removes those of processes that ended (:func:`sweep_marks`).
    """
    shm = "/dev/shm"  # noqa: S108 - a folder of our own is made in it by mkdtemp (0o700)
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK)):
        return str(spool_folder())
    sweep_marks(shm)
    return shm


def sweep_marks(root: str) -> None:
    """Remove the folders of marks in ``root`` whose driver process has ended.

    A folder ``tasktrace-joblib-<pid>-*`` of a pid with no process (``os.kill(pid, 0)``:
    ``ProcessLookupError``) goes; a live pid's stays (a reused pid's too: empty files, until
    that process ends). Another user's folders cannot be removed and are left. Never raises.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            parts = entry.name.split("-")
            if entry.name.startswith(MARKS_PREFIX) and len(parts) > 3 and parts[2].isdigit():
                try:
                    os.kill(int(parts[2]), 0)
                except ProcessLookupError:
                    shutil.rmtree(entry.path, ignore_errors=True)
                except OSError:  # PermissionError: another user's live process
                    continue


class CallBook:
    """The carried batches of one ``Parallel`` call, in the driver (see the module docstring).

    Attributes:
        folder: The call's folder of marks; ``None`` when it could not be made (then which
            batches started is not known: :meth:`lost` counts them as unknown).
        why: Why there is no folder (the OS error), or ``None``.
    """

    def __init__(self) -> None:
        """Make the call's folder of marks (in ``/dev/shm``, else the spool folder)."""
        self._lock = threading.RLock()  # a SIGTERM handler may run while the main thread holds it
        self._seq = itertools.count()
        self._out: set[int] = set()  # submitted, not ended
        self._not_home: set[int] = set()  # ended without their records (the worker was killed)
        self.why: str | None = None
        try:
            self.folder: str | None = tempfile.mkdtemp(
                prefix=f"{MARKS_PREFIX}{os.getpid()}-", dir=_marks_root()
            )
        except OSError as e:
            self.folder, self.why = None, str(e)
        _open_books.add(self)

    def submitted(self) -> tuple[int, str | None]:
        """Note a batch submitted; return its number and start mark (``None``: no folder)."""
        seq = next(self._seq)
        with self._lock:
            self._out.add(seq)
        return seq, None if self.folder is None else os.path.join(self.folder, str(seq))

    def ended(self, seq: int, *, home: bool) -> None:
        """Note that batch ``seq`` ended: with its records (``home``), or without them."""
        with self._lock:
            self._out.discard(seq)
            if not home:
                self._not_home.add(seq)

    def aborting(self) -> None:
        """Make the aborting mark: queued batches taken from now on do not run."""
        if self.folder is not None:
            _touch(os.path.join(self.folder, ABORTING))

    def running_out(self) -> int:
        """Return how many batches not ended yet have started (all of them, without marks)."""
        with self._lock:
            out = list(self._out)
        return len(out) if self.folder is None else sum(map(self._started, out))

    def lost(self) -> tuple[int, int, int]:
        """After joblib stopped the workers: the batches not home, as (running, queued, unknown).

        ``running``: started and never came home (their tasks' records are lost); ``queued``:
        never started; ``unknown``: not home, and whether they started is not known (no folder).
        """
        with self._lock:
            gone = self._out | self._not_home
        if self.folder is None:
            return 0, 0, len(gone)
        running = sum(map(self._started, gone))
        return running, len(gone) - running, 0

    def close(self) -> None:
        """Remove the call's folder (at the call's end)."""
        _open_books.discard(self)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _started(self, seq: int) -> bool:
        return os.path.exists(os.path.join(self.folder or "", str(seq)))


_open_books: set[CallBook] = set()
"""The calls not closed yet (set operations are atomic under the GIL: no lock a signal handler
could find held)."""


def abort_open_calls() -> None:
    """On ``SIGTERM`` (the driver dies next): no queued batch starts; warn what is lost.

    Makes every open call's aborting mark, then counts its batches out: those started lose
    their tasks' records (loky's workers end them, but their results cannot reach a dead
    driver; joblib does not stop them), those queued never start. A warning says both numbers
    when a started batch is lost (none: no warning). A worker between its look at the
    aborting mark and its start mark (microseconds) is counted as queued, yet runs. Run by
    tasktrace's handler (:func:`~tasktrace.task.signals.on_sigterm`), in the main thread.
    """
    books = _open_books.copy()
    for book in books:
        book.aborting()
    running = queued = unknown = 0
    why = None
    for book in books:
        r, q, u = book.lost()
        running, queued, unknown = running + r, queued + q, unknown + u
        why = why or book.why
    if running:
        _warn(
            "joblib-sigterm",
            "tasktrace: a joblib call stopped by SIGTERM with %d batch(es) of tasks running; "
            "their results cannot come home (joblib leaves their workers running), so those "
            "tasks' records are lost (%d queued batch(es) will not start; every batch that "
            "ended is in the tree)",
            running,
            queued,
        )
    if unknown:
        _warn(
            "joblib-sigterm-unknown",
            "tasktrace: a joblib call stopped by SIGTERM with %d batch(es) of tasks not back, "
            "running or queued (not known: %s); the records of those running are lost, and "
            "those queued may still start in joblib's workers",
            unknown,
            why,
        )


on_sigterm(abort_open_calls)


class Homecoming:
    """A batch's results or error together with the records of the tasks it ran (picklable).

    Attributes:
        results: joblib's list of the calls' results (``None`` when the batch raised).
        records: Task JSON of the batch's finished root tasks (emptied by :meth:`take`).
        error: What the batch raised, wrapped with its traceback text as joblib ships a
            worker's exception (joblib's ``_ExceptionWithTraceback``); unpickled, the exception
            itself with the worker traceback as ``__cause__``. ``None`` when it returned.
    """

    __slots__ = ("error", "records", "results")

    def __init__(self, results: Any, records: list[bytes], error: Any = None) -> None:
        """Hold ``results``, ``records`` and ``error`` (see the class docstring)."""
        self.results = results
        self.records = records
        self.error = error

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the three fields."""
        return (Homecoming, (self.results, self.records, self.error))

    def raised(self) -> BaseException | None:
        """Return the batch's exception (rebuilt with its worker traceback), or ``None``."""
        error = self.error
        if error is None or isinstance(error, BaseException):
            return error
        rebuild, args = error.__reduce__()  # not pickled on the way: rebuild it here
        exc: BaseException = rebuild(*args)
        return exc

    def take(self) -> list[bytes]:
        """Return the records and forget them (each record is delivered once)."""
        records, self.records = self.records, []
        return records


def _homecoming(out: Any) -> Homecoming | None:
    """Return the :class:`Homecoming` of a batch's outcome ``out``, as a backend's callback gets it.

    ``out`` is a done future (loky) or the batch's return value (``multiprocessing``'s
    ``apply_async`` callbacks); ``None`` when it holds none (the worker was killed, the call
    cancelled).
    """
    if isinstance(out, concurrent.futures.Future):
        if out.cancelled() or not out.done() or out.exception(timeout=0) is not None:
            return None
        out = out.result(timeout=0)
    return out if isinstance(out, Homecoming) else None


INBOX: Final = RecordInbox()
"""The records of carried batches, held from their callbacks and delivered many at a time (64,
or at the end of the call, a task's finish, a task file's write:
:class:`~tasktrace.tree.delivery.RecordInbox`)."""


class DeliveringCallback:
    """joblib's completion callback for a carried batch, run after taking its records home.

    joblib's callback does not retrieve the result of a batch that completes while the call
    is aborting (another batch failed) or after the call ended; the records are taken here
    first, whatever joblib then does with the result (held in :data:`INBOX`, delivered many in
    a row at the end of the call), and the call's :class:`CallBook` learns whether they came.
    A failure here is warned about once and never keeps joblib's callback from running (the
    call would wait forever).
    """

    __slots__ = ("book", "callback", "seq")

    def __init__(self, callback: Callable[[Any], Any], book: CallBook, seq: int) -> None:
        """Wrap joblib's ``callback`` of batch ``seq`` of the call ``book``."""
        self.callback = callback
        self.book = book
        self.seq = seq

    def __call__(self, out: Any) -> Any:
        """Deliver the batch's records (removed from its outcome ``out``), then call joblib's."""
        home = False
        try:
            homecoming = _homecoming(out)
            home = homecoming is not None
            records = homecoming.take() if homecoming is not None else []
            if records:
                INBOX.put(records)
        except Exception as e:  # noqa: BLE001 - joblib must still learn that the batch ended
            _warn("joblib-deliver", "tasktrace: records of a joblib batch may be missing: %r", e)
        finally:
            self.book.ended(self.seq, home=home)
        return self.callback(out)


class ContextBatch:
    """A joblib batch run in a copy of the submitter's context (the traced thread backend).

    Attributes:
        batch: joblib's batch (``BatchedCalls``), called with no arguments.
        context: The context of the thread that made the ``Parallel`` call, captured at the
            call's start; each run uses a copy of it, so one batch object may run in any
            thread (thread-safe).
    """

    __slots__ = ("batch", "context")

    def __init__(self, batch: Callable[[], Any], context: contextvars.Context) -> None:
        """Wrap ``batch`` to run in a copy of ``context``."""
        self.batch = batch
        self.context = context

    def __len__(self) -> int:
        """Return the number of calls in the batch (joblib's batch statistics read it)."""
        return len(self.batch)  # type: ignore[arg-type]

    def __call__(self) -> Any:
        """Run the batch in a copy of the context; return its results (its error propagates)."""
        return self.context.copy().run(self.batch)
