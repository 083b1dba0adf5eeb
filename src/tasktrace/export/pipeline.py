"""The batch processors of tasktrace's exporters, with a bounded shutdown.

:class:`ExportPipeline` owns the :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor` of
each guarded exporter (:class:`~tasktrace.export.guarded.GuardedSpanExporter`). Export runs on
the batch processor's thread, so a slow, refusing or black-holed endpoint adds nothing to a
task's own overhead. :meth:`ExportPipeline.shutdown` flushes and shuts down within a deadline on
a helper thread; past the deadline it gives up (the threads are daemons), and says how many spans
of the process were not exported, once (:mod:`tasktrace.export.losses`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence

from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import get_settings
from tasktrace.export.failing import failing_elsewhere, note_export_state
from tasktrace.export.guarded import GuardedSpanExporter, clear_refused
from tasktrace.export.losses import loss_details
from tasktrace.export.pending import PendingSpanFilter
from tasktrace.export.quiet import ExportMessages, quiet_export

__all__ = ["DEFAULT_MAX_QUEUE_SIZE", "ExportPipeline", "shutdown_pipelines"]

_log = logging.getLogger(__name__)
_SDK_MAX_QUEUE_SIZE = 2048  # the SDK's own default, for a value it cannot parse


_POLL_S = 0.05
"""How often a waiting flush looks whether the endpoint failed meanwhile, in seconds."""

DEFAULT_MAX_QUEUE_SIZE = 16384
"""Span queue of tasktrace's batch processors unless ``OTEL_BSP_MAX_QUEUE_SIZE`` is set.

The SDK's default (2048) drops spans from a tight loop of short tasks faster than one export
thread sends them; 16,384 queued spans hold a few tens of MB at most.
"""


def _queue_size(configured: str | None) -> int:
    """Return the queue size the SDK's batch processor uses, given ``OTEL_BSP_MAX_QUEUE_SIZE``."""
    if not configured:
        return DEFAULT_MAX_QUEUE_SIZE  # passed to the SDK
    try:
        return int(configured)  # as the SDK parses it
    except ValueError:
        return _SDK_MAX_QUEUE_SIZE


class _CountingBatchProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts its spans; its flush never waits on a failing endpoint.

    ``ended_spans`` counts the spans given to the batch processor (sampled ones: it drops the
    others). The spans it drops from a full queue are counted from its own message, which is
    silenced (:meth:`on_end`).
    """

    def __init__(self, exporter: GuardedSpanExporter) -> None:
        configured = os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE)
        super().__init__(exporter, max_queue_size=None if configured else DEFAULT_MAX_QUEUE_SIZE)
        self.max_queue_size = _queue_size(configured)
        self.guarded = exporter
        self._count_lock = threading.Lock()
        renew_after_fork(self, "_count_lock")
        self.ended_spans = 0

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span``; count it, and count it dropped if the queue was full.

        ``waiting`` (spans queued less spans handed to the exporter, less counted drops) is
        never below the queue's true length, so a span ended while it is at most the queue size
        cannot overflow it: the common path costs a lock and a comparison. Above it, the SDK's
        ``Queue full, dropping Span.`` (logged on this thread) is counted and not shown.
        """
        context = span.context
        if not (context and context.trace_flags.sampled):
            return  # the SDK's batch processor drops it too
        guarded = self.guarded
        losses = guarded.losses
        with self._count_lock:
            self.ended_spans += 1
            handed = guarded.exported_spans + guarded.dropped_spans + losses.queue_full
            waiting = self.ended_spans - handed
        if waiting <= self.max_queue_size:
            super().on_end(span)
            return
        with quiet_export(ExportMessages(losses.note_message)):
            super().on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export what is queued, waiting at most ``timeout_millis`` (default 30 000) ms.

        Returns at once (``False``) when the endpoint is known to fail
        (:attr:`~tasktrace.export.guarded.GuardedSpanExporter.failing`: the last export dropped
        spans, an attempt of the export under way failed, or an earlier flush got no answer),
        and stops waiting as soon as an attempt fails: waiting cannot help. A flush that gets no
        answer in time marks the endpoint failing, so that later flushes do not wait either,
        until an export succeeds again. The spans stay queued for the batch processor's own
        exports and the exit's.

        The SDK's own ``force_flush`` ignores its timeout and blocks for as long as the
        exporter does (retries included); here it runs on a daemon thread and is waited for
        within the bound. Returns whether it finished in time (``False`` during interpreter
        shutdown, where Python 3.12 cannot start the thread).
        """
        exporter = self.guarded
        if exporter.failing:
            return False
        timeout_s = (timeout_millis if timeout_millis is not None else 30000) / 1000
        done = threading.Event()

        def flush() -> None:
            try:
                BatchSpanProcessor.force_flush(self, timeout_millis)
            finally:
                done.set()

        try:
            threading.Thread(target=flush, name="tasktrace-export-flush", daemon=True).start()
        except RuntimeError:  # can't create new thread at interpreter shutdown
            return False
        deadline = time.monotonic() + timeout_s
        while not done.wait(min(max(0.0, deadline - time.monotonic()), _POLL_S)):
            reason = exporter.failing_reason
            if reason is None and time.monotonic() >= deadline:
                if timeout_s <= 0:  # asked not to wait: no sign of failure
                    return False
                reason = f"no answer within {timeout_s:.2g} s"
            if reason is not None:
                exporter.mark_failing(reason)  # later flushes, and other processes, know
                return False
        return True


class ExportPipeline:
    """The batch processors of tasktrace's guarded exporters, with a bounded shutdown.

    Args:
        exporters: Guarded exporters; each gets its own batch processor.

    Attributes:
        processors: One :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor` per
            exporter, to add to a tracer provider.

    The shutdown runs on a daemon thread started with the pipeline (idle until needed):
    Python 3.12 refuses to start threads from :mod:`atexit` handlers. A forked child starts
    its own (``fork`` copies only the forking thread; the SDK restarts each batch processor's
    worker likewise), so a child's exit exports the child's spans; the spans the parent had
    queued are the parent's to export and report.

    Thread-safety: :meth:`begin_shutdown` and :meth:`shutdown` may be called from any thread,
    more than once.

    """

    def __init__(self, exporters: Sequence[GuardedSpanExporter]) -> None:
        """Create one batch processor per exporter and the idle shutdown thread."""
        self.exporters = list(exporters)
        """The guarded exporters."""
        if get_settings().pending_spans:  # drop snapshots whose real span is in the batch
            for exporter in self.exporters:
                exporter.inner = PendingSpanFilter(exporter.inner)
        for exporter in self.exporters:  # other processes of the run learn of a failure
            exporter.on_state_change = note_export_state
        self.processors: list[BatchSpanProcessor] = [
            _CountingBatchProcessor(e) for e in self.exporters
        ]
        self._go = threading.Event()
        self._finished: list[threading.Event] = []
        self._start_shutdown_threads()
        if hasattr(os, "register_at_fork"):  # held weakly: a hook cannot be unregistered
            renew = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := renew()) and method())

    def _start_shutdown_threads(self) -> None:
        # One per batch processor: an exporter that retries or hangs (a collector down) must
        # not hold up another one's flush (the OTLP JSON file of the same spans).
        self._finished = [threading.Event() for _ in self.processors]
        for processor, finished in zip(self.processors, self._finished, strict=True):
            threading.Thread(
                target=self._shut_down_one,
                args=(processor, finished),
                name="tasktrace-export-shutdown",
                daemon=True,
            ).start()

    def _after_fork_in_child(self) -> None:
        # The parent's shutdown threads are not in the child, and another thread may have held
        # an event's lock at the fork: new events, in the state the parent's had.
        go, done = self._go.is_set(), all(f.is_set() for f in self._finished)
        self._go = threading.Event()
        if go:
            self._go.set()
        if done:
            self._finished = [threading.Event() for _ in self.processors]
            for finished in self._finished:
                finished.set()
            return
        for exporter, processor in zip(self.exporters, self.processors, strict=True):
            if isinstance(processor, _CountingBatchProcessor):  # the child's spans from here
                processor.ended_spans = exporter.exported_spans = exporter.dropped_spans = 0
                exporter.losses.restart()
        self._start_shutdown_threads()

    def _shut_down_one(self, processor: BatchSpanProcessor, finished: threading.Event) -> None:
        self._go.wait()
        try:
            processor.shutdown()  # exports what is queued, then shuts the exporter down
        finally:
            finished.set()

    def begin_shutdown(self) -> None:
        """Start exporting what is queued and shutting down, in the background; return now."""
        self._go.set()

    def shutdown(self, timeout_s: float, *, bound_s: float | None = None) -> bool:
        """Export what is queued and shut down, waiting at most ``timeout_s`` seconds.

        ``bound_s`` is the bound of the whole shutdown this one is part of (the exit's, which
        began earlier), named in the warning; default ``timeout_s``.

        Each exporter flushes on its own thread, so that one whose endpoint retries or hangs
        does not hold up another's (the OTLP JSON file beside a collector that is down). An
        exporter whose export was refused outright (nothing listens at its endpoint, so
        retrying cannot help an exiting process) is shut down at once to stop its retries;
        after 80 % of the bound, every exporter not done yet is (so that a failure is still
        reported with its reason); past the bound the flush is abandoned on its daemon thread.
        If any span was not exported, the one export warning says how many.

        When another process of the run (this process's command or pool workers, a sibling)
        found every endpoint of the pipeline failing
        (:func:`~tasktrace.export.failing.failing_elsewhere`), it does not wait at all: that
        process's own exit waited for it already, and a second wait adds the same bound again.

        Returns:
            Whether every span given to the pipeline was exported.

        """
        elsewhere = [failing_elsewhere(exporter.where) for exporter in self.exporters]
        if self.exporters and all(elsewhere):
            return self._not_waited_for(elsewhere)
        clear_refused()  # only a refusal during this flush counts: the collector may be back
        for exporter in self.exporters:
            exporter.refused = False
        self._go.set()
        started = time.monotonic()
        deadline = started + timeout_s * 0.8
        pairs = list(zip(self.exporters, self._finished, strict=True))
        while True:
            pending = [(e, f) for e, f in pairs if not f.is_set()]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            for exporter, _ in pending:
                if exporter.refused:
                    exporter.shutdown()
            pending[0][1].wait(min(left, 0.05))
        for exporter, _ in pending:
            exporter.shutdown()
        end = started + timeout_s
        for _, finished in pending:
            finished.wait(max(0.0, end - time.monotonic()))
        ok = True
        bound = timeout_s if bound_s is None else bound_s
        for (exporter, finished), processor in zip(pairs, self.processors, strict=True):
            if finished.is_set():
                state, why = "", "dropped by the batch processor"
            else:
                state = f", export unfinished after {bound:.3g} s at exit"
                why = f"unsent when the exit's {bound:.3g} s bound ran out"
            ok = _report_losses(exporter, processor, state, why) and ok
        return ok

    def _not_waited_for(self, reasons: Sequence[str | None]) -> bool:
        """Report the spans not exported, without waiting: another process found it failing."""
        for exporter, processor, reason in zip(
            self.exporters, self.processors, reasons, strict=True
        ):
            if exporter.last_error is None and _unsent(exporter, processor) > 0:
                exporter.last_error = f"{reason}, found by another process of this run"
        return self.abandon("not waited for at exit")

    def abandon(self, why: str) -> bool:
        """Begin the shutdown and report the spans not exported now, without waiting.

        For a process about to end whose endpoints fail (``SIGTERM``: waiting cannot help).
        ``why`` says so in the report (``"not waited for at exit"``). Returns whether every
        span given to the pipeline was exported.
        """
        self._go.set()
        ok = True
        for exporter, processor in zip(self.exporters, self.processors, strict=True):
            ok = _report_losses(exporter, processor, f", {why}", f"unsent, {why}") and ok
        return ok


def _unsent(exporter: GuardedSpanExporter, processor: BatchSpanProcessor) -> int:
    return getattr(processor, "ended_spans", 0) - exporter.exported_spans


def _report_losses(
    exporter: GuardedSpanExporter, processor: BatchSpanProcessor, state: str, unsent_why: str
) -> bool:
    """Say, once per exporter, how many spans of this process it did not export; ``True``: none.

    The process's first export warning, if no export failed before the exit, with the count
    and ``state``; else (or for spans lost only to a full queue) the total, with the first
    failure and when the collector answered again (:mod:`tasktrace.export.losses`).
    """
    unsent = _unsent(exporter, processor)
    if unsent <= 0:
        return True
    failed = exporter.dropped_spans
    no_failure = not failed and not state and exporter.last_error is None  # a full queue only
    if not no_failure:
        exporter.mark_failing(exporter.last_error or "no answer")  # for the run's other processes
    if not exporter.losses.claim_report():
        return False
    if not no_failure and unsent <= exporter.losses.said:  # the first warning said it all
        return False
    ended = getattr(processor, "ended_spans", 0)
    queue_size = getattr(processor, "max_queue_size", 0)
    losses = exporter.losses
    if not no_failure:
        counts = loss_details(
            losses, failed=failed, unsent=unsent, queue_size=queue_size, unsent_why=None
        )
        where = "; ".join(filter(None, [f"process {os.getpid()}", counts]))
        what = f"{unsent} of {ended} spans not exported{state} ({where})"
        if exporter.report_at_exit(what):  # the first warning, at exit: it has the total
            return False
    details = loss_details(
        losses,
        failed=failed,
        unsent=unsent,
        queue_size=queue_size,
        unsent_why=unsent_why,
        with_failure=True,
    )
    _log.warning(
        "tasktrace: %d of %d spans of this process (pid %d) were not exported to %s (%s). "
        "Task files are complete",
        unsent,
        ended,
        os.getpid(),
        exporter.where,
        details,
    )
    return False


def shutdown_pipelines(
    pipelines: Sequence[ExportPipeline], deadline: float, bound_s: float
) -> bool:
    """Shut ``pipelines`` down by ``deadline`` (``time.monotonic()``), all flushing at once.

    Every pipeline begins its shutdown first; then each is waited for with the time left.
    ``bound_s`` (seconds) is the whole bound, for the warning. Returns whether every span was
    exported.
    """
    for pipeline in pipelines:
        pipeline.begin_shutdown()
    ok = True
    for pipeline in pipelines:
        left_s = max(0.0, deadline - time.monotonic())
        ok = pipeline.shutdown(left_s, bound_s=bound_s) and ok
    return ok
