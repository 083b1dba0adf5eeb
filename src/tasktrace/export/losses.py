"""Count every span a guarded exporter did not deliver, and say the total once, at exit.

tasktrace's exporters warn once, at the first failure (:mod:`tasktrace.export.guarded`): a
collector that is down for an hour is one line, not one per batch. What was lost after that
line is counted here, per exporter, and said in one line when the process ends (its
interpreter exit, or tasktrace's ``SIGTERM`` handler, :mod:`tasktrace.task.signals`)::

    tasktrace: 79 of 141 spans of this process (pid 4242) were not exported to
    http://127.0.0.1:4318/v1/traces (first failure at 18:30:01: [Errno 111] Connection
    refused; the collector answered again between 18:30:06 and 18:30:11; 75 in requests that
    failed, 4 unsent when the exit's 5 s bound ran out). Task files are complete

The total is exact: spans given to the batch processor less spans the collector accepted. It is
split into the spans of requests that failed (refused, timed out, answered with an error, or
too large to send), the spans the batch processor dropped because its queue was full (it drops
one span per span ended while ``OTEL_BSP_MAX_QUEUE_SIZE`` spans wait; counted from the SDK's own
``Queue full, dropping Span.`` message, which tasktrace silences), and the rest: spans still
queued when the exit gave up on them.

Each process counts its own spans: a forked child starts from zero (the spans its parent had
queued are the parent's), and a subprocess or a spawned worker is a process of its own.

Thread-safety: :class:`ExportLosses` is updated from the exporting thread and the threads
that end spans, under its lock; read from any thread.
"""

from __future__ import annotations

import threading
import time
from typing import Final

from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE

from tasktrace.core.forksafe import renew_after_fork

__all__ = ["QUEUE_FULL", "ExportLosses", "loss_details"]

QUEUE_FULL: Final = "Queue full, dropping"
"""The start of the SDK batch processor's message for each span it drops from a full queue."""


def _clock(wall_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall_s))


class ExportLosses:
    """When one exporter's exports first failed and answered again, and the queue's drops.

    Attributes:
        queue_full: Spans the batch processor dropped because its queue was full (count).
        first_failure: Why the first failed export failed (no credentials), or ``None``.
        first_failure_at: When it failed (``time.time()``, seconds), or ``None``.
        answered_again: ``(first, last)`` ``time.time()`` of the exports that succeeded after
            the first failure, or ``None``.
        said: Spans the process's first export warning already said were lost (count): an
            exit total no larger adds nothing, and is not logged.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        """Start with nothing lost."""
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self.queue_full = 0
        self.first_failure: str | None = None
        self.first_failure_at: float | None = None
        self.answered_again: tuple[float, float] | None = None
        self.said = 0
        self._reported = False

    def note_export(self, *, sent: int, failure: str | None) -> None:
        """Record an export that sent ``sent`` spans and failed for ``failure`` (``None``: none)."""
        now = time.time()
        with self._lock:
            if failure is not None and self.first_failure is None:
                self.first_failure, self.first_failure_at = failure, now
            elif sent and self.first_failure is not None:
                first = self.answered_again[0] if self.answered_again else now
                self.answered_again = (first, now)

    def note_message(self, message: str) -> None:
        """Count ``message`` if it is the batch processor's drop of a span from a full queue."""
        if message.startswith(QUEUE_FULL):
            with self._lock:
                self.queue_full += 1

    def claim_report(self) -> bool:
        """Return ``True`` the first time only: the caller says the total (once per process)."""
        with self._lock:
            first, self._reported = not self._reported, True
        return first

    def restart(self) -> None:
        """Start from zero (a forked child: the spans its parent queued are the parent's)."""
        with self._lock:
            self.queue_full = 0
            self.first_failure = self.first_failure_at = self.answered_again = None
            self.said = 0
            self._reported = False


def loss_details(
    losses: ExportLosses,
    *,
    failed: int,
    unsent: int,
    unsent_why: str | None,
    queue_size: int,
    with_failure: bool = False,
) -> str:
    """Return the parenthesised details of an exit report (see the module docstring).

    Args:
        losses: The exporter's record.
        failed: Spans in requests that failed (count).
        unsent: All spans not exported (count); what is neither ``failed`` nor dropped from the
            full queue is said with ``unsent_why``.
        unsent_why: How the rest was lost (``"unsent when the exit's 5 s bound ran out"``);
            ``None``: the rest is not listed (the caller says it).
        queue_size: The batch processor's queue size (``OTEL_BSP_MAX_QUEUE_SIZE``), in spans.
        with_failure: Whether to say the first failure and when the collector answered again.
    """
    parts: list[str] = []
    if with_failure and losses.first_failure is not None and losses.first_failure_at:
        parts.append(f"first failure at {_clock(losses.first_failure_at)}: {losses.first_failure}")
    if with_failure and losses.answered_again is not None:
        first, last = (_clock(t) for t in losses.answered_again)
        when = f"at {first}" if first == last else f"between {first} and {last}"
        parts.append(f"the collector answered again {when}")
    queue_full = min(losses.queue_full, max(0, unsent - failed))
    rest = unsent - failed - queue_full
    counts = [f"{failed} in requests that failed"] if failed else []
    if queue_full:
        counts.append(
            f"{queue_full} dropped by the batch processor, its queue full "
            f"({OTEL_BSP_MAX_QUEUE_SIZE}={queue_size})"
        )
    if rest > 0 and unsent_why is not None:
        counts.append(f"{rest} {unsent_why}")
    if counts:
        parts.append(", ".join(counts))
    return "; ".join(parts)
