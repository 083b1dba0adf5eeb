"""Task metrics' export failures: one warning naming the cause and a bounded exit, as for spans.

The OTel project's OTLP metric exporters log every failed attempt ("Transient error ...
retrying in 3.46s"), then "Failed to export metrics ...", and the meter provider's own exit
handler waits for those retries (up to the exporter's timeout, 10 s by default). For the meter
provider tasktrace creates (see :mod:`tasktrace.export.meter_provider`), each OTLP metric
exporter is wrapped in a :class:`GuardedMetricExporter`, which does what
:class:`~tasktrace.export.guarded.GuardedSpanExporter` does for spans:

- it exports inside :func:`~tasktrace.export.quiet.quiet_export`, so the exporter's records
  (on whichever logger: the gRPC metric exporter logs through the gRPC base exporter's) are
  dropped and their messages kept; a failed export logs **one** tasktrace warning per endpoint
  (without credentials) with the reason (:func:`~tasktrace.export.failure.describe_failure`:
  connection refused, HTTP status, TLS, no answer; header values and the endpoint's password
  and query replaced by ``***``);
- a failure retrying cannot mend (a TLS certificate refused) shuts the exporter down at once;
- the interpreter's exit (:func:`guard_metric_export`) shuts the provider down by the exit's
  one deadline (:func:`~tasktrace.export.provider.exit_deadline`: ``exit_timeout_s`` for
  spans and metrics together): the last collection may take 80 % of the time left (none when
  nothing listens at the endpoint: retrying cannot help an exiting process), then the
  exporters are shut down (ending their retries) and the rest is waited for; an export still
  unanswered is reported as such;
- the processes of a run share what they found (:mod:`tasktrace.export.failing`, as spans do):
  a failed export, or an exit that got no answer, marks the endpoint failing in the run's spool
  folder (a later successful export clears the mark), and at exit a process does not wait at
  all for an endpoint that another process of the run found failing: that process's exit
  waited for it already, so ``tasktrace run`` with task metrics waits once, not once in its
  command and again in the wrapper.

A meter provider the program installed itself is never touched: its exporters are its own.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tasktrace.core.warn import WarnOnce
from tasktrace.export.failing import failing_elsewhere, note_export_state
from tasktrace.export.failure import (
    NO_ANSWER,
    describe_failure,
    endpoint_secrets,
    is_permanent,
    redact_endpoint,
)
from tasktrace.export.guarded import is_refusal
from tasktrace.export.provider import exit_deadline, exit_timeout_s
from tasktrace.export.quiet import ExportMessages, quiet_export
from tasktrace.export.status_hint import tls_hint

__all__ = ["GuardedMetricExporter", "guard_metric_export"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

LAST_COLLECTION_SHARE = 0.8
"""The share of the exit's time left that the last collection may take before the exporters
are shut down (the spans' pipeline keeps to the same share)."""


class GuardedMetricExporter:
    """An OTel metric exporter wrapper that never raises and reports failure once.

    Args:
        inner: The OTel OTLP metric exporter (HTTP or gRPC).
        where: The metrics endpoint, for the warning (credentials, query removed).
        secrets: Values never to appear in the warning (the request headers).

    Attributes:
        refused: Whether an export was refused outright (nothing listens at the endpoint).
        exiting: Set by the exit handler: a refusal then ends the retries at once.
        last_error: The last failure's reason (scrubbed), or ``None``.

    Any other attribute is the inner exporter's (the reader reads its preferred temporality
    and aggregation). Thread-safety: ``export`` is called by the reader's thread (never
    concurrently, the reader holds a lock); ``stop``, ``wait_idle`` and ``report`` from any.
    """

    def __init__(self, inner: Any, where: str, secrets: Iterable[str] = ()) -> None:
        """Wrap ``inner`` (see the class docstring)."""
        from opentelemetry.sdk.metrics.export import MetricExportResult  # noqa: PLC0415 - lazy SDK

        self.inner = inner
        """The wrapped exporter."""
        self.where = redact_endpoint(where)
        """The destination named in the warning."""
        self.refused = False
        self.exiting = False
        self.last_error: str | None = None
        self._results = MetricExportResult
        words = {w for s in (*secrets, *endpoint_secrets(where)) for w in (s, *s.split())}
        self._secrets = sorted((w for w in words if len(w) >= 4), key=len, reverse=True)
        self._current: ExportMessages | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self._permanent: str | None = None
        self._noted: str | None = None  # the failure noted for the run's other processes

    def __getattr__(self, name: str) -> Any:
        """Return the inner exporter's attribute ``name`` (the reader's settings)."""
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _noticed(self, message: str) -> None:
        """On the exporting thread, as the OTel exporter logs ``message``."""
        if is_refusal(message):
            self.refused = True
            if self.exiting:
                self.stop()
        if self._permanent is None and is_permanent(message):
            self._permanent = describe_failure([message])
            self.stop()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        """Export with the inner exporter; never raises; the first failure is warned about.

        Returns:
            The inner exporter's result (``FAILURE`` when it raised or is shut down).
        """
        if self._permanent is not None or self._stopped:  # shut down: nothing is sent
            return self._results.FAILURE
        collector = ExportMessages(self._noticed)
        self._current = collector
        self._idle.clear()
        try:
            with quiet_export(collector):
                try:
                    result = self.inner.export(
                        metrics_data, timeout_millis=timeout_millis, **kwargs
                    )
                except Exception as e:  # noqa: BLE001 - export must never break the program
                    result = self._results.FAILURE
                    collector.messages.append(f"{type(e).__name__}: {e}")
        finally:
            self._current = None
            self._idle.set()
        if result is not self._results.SUCCESS:
            self.last_error = self._scrub(describe_failure(collector.messages))
            self.note_state(self.last_error)
            self.report("task metrics are dropped while it fails")
        elif self._noted is not None:
            self.note_state(None)
        return result

    def note_state(self, reason: str | None) -> None:
        """Tell the run's other processes that the endpoint fails (``reason``) or works again.

        Writes or clears this process's marker for the endpoint in the run's spool folder
        (:func:`~tasktrace.export.failing.note_export_state`) when the state changes; never raises.
        """
        if (self._noted is None) == (reason is None):
            return
        self._noted = reason
        note_export_state(self.where, reason)

    def in_flight_reason(self) -> str | None:
        """Why the export in progress failed so far (attempts being retried), else ``None``."""
        current = self._current
        messages = list(current.messages) if current is not None else []
        return self._scrub(describe_failure(messages)) if messages else None

    def report(self, what: str) -> None:
        """Log the one metric export warning for this endpoint (if not yet), naming ``what``.

        The reason is the last failure's, else the export in progress's, else
        :data:`~tasktrace.export.failure.NO_ANSWER`.
        """
        reason = self.last_error or self.in_flight_reason() or NO_ANSWER
        hint = tls_hint(reason)
        _warn(
            f"metric-export-failed:{self.where}",
            "tasktrace: metric export to %s failed (%s); %s.%s Task files are complete; "
            "further metric export failures are not reported",
            self.where,
            reason,
            what,
            f" {hint}." if hint else "",
        )

    def busy(self) -> bool:
        """Whether an export is in progress."""
        return not self._idle.is_set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` seconds for the export in progress; whether it ended."""
        return self._idle.wait(max(0.0, timeout_s))

    def stop(self) -> None:
        """Shut the inner exporter down (ends its retries at once); once; never raises."""
        if self._stopped:
            return
        self._stopped = True
        try:
            with quiet_export(ExportMessages()):
                self.inner.shutdown()
        except Exception as e:  # noqa: BLE001 - the exit must go on
            _log.debug("tasktrace: metric exporter shutdown failed: %r", e)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut down (see :meth:`stop`); the reader calls it after its last collection."""
        self.stop()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Flush the inner exporter; never raises."""
        try:
            with quiet_export(ExportMessages()):
                return bool(self.inner.force_flush(timeout_millis=timeout_millis))
        except Exception:  # noqa: BLE001 - flush must never break the program
            return False


def _shutdown_at_exit(provider: Any, exporters: Sequence[GuardedMetricExporter]) -> None:
    for exporter in exporters:
        exporter.exiting = True
        elsewhere = failing_elsewhere(exporter.where)
        if elsewhere is not None and exporter.last_error is None:  # its exit waited already
            exporter.last_error = f"{elsewhere}, found by another process of this run"
            exporter.report("the last task metrics were not exported, not waited for at exit")
        if exporter.refused or elsewhere is not None:  # the last collection would only wait
            exporter.stop()
    deadline = exit_deadline()  # shared with the spans' exit
    try:
        left_s = max(0.0, deadline - time.monotonic()) * LAST_COLLECTION_SHARE
        provider.shutdown(timeout_millis=left_s * 1000)  # the last collection, then stop()
    except Exception as e:  # noqa: BLE001 - the exit must go on
        _log.debug("tasktrace: meter provider shutdown failed: %r", e)
    for exporter in exporters:
        exporter.stop()
        if not exporter.wait_idle(deadline - time.monotonic()):
            exporter.note_state(exporter.in_flight_reason() or NO_ANSWER)  # for the run's others
            bound = exit_timeout_s()
            exporter.report(f"the last task metrics were not exported within {bound:.3g} s at exit")


def guard_metric_export(provider: Any, exporters: Sequence[Any]) -> None:
    """Install the bounded exit of ``provider`` (created with ``shutdown_on_exit=False``).

    Args:
        provider: tasktrace's meter provider.
        exporters: Its exporters; the :class:`GuardedMetricExporter` among them are stopped
            and waited for by the exit's deadline.
    """
    guarded = [e for e in exporters if isinstance(e, GuardedMetricExporter)]
    atexit.register(_shutdown_at_exit, provider, guarded)
