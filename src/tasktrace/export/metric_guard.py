"""Task metrics' export failures: one warning per process and a bounded exit, as for spans.

The OTel project's OTLP metric exporter logs every failed attempt ("Transient error ...
retrying in 3.46s"), then "Failed to export metrics batch ...", and the meter provider's own
exit handler waits for those retries (up to the exporter's timeout, 10 s by default). For the
meter provider tasktrace creates (see :mod:`tasktrace.export.metrics`), :func:`guard_metric_export`
replaces both:

- a :class:`logging.Filter` on the OTLP metric exporters' loggers drops their records and logs
  **one** tasktrace warning per process, naming the endpoint (without credentials) and the
  reason (:func:`~tasktrace.export.failure.describe_failure`; header values and the endpoint's
  password and query replaced by ``***``);
- the interpreter's exit shuts the provider down by the exit's one deadline
  (:func:`~tasktrace.export.provider.exit_deadline`: ``exit_timeout_s`` for spans and metrics
  together, not for each in turn); when nothing listens at the
  endpoint (connection refused), retrying cannot help a process that is exiting, so the
  exporters are shut down at once, which ends their retries.

A meter provider the program installed itself is never touched: its exporters are its own.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tasktrace.core.warn import WarnOnce
from tasktrace.export.failure import describe_failure, endpoint_secrets, redact_endpoint
from tasktrace.export.provider import exit_deadline

__all__ = ["METRIC_EXPORTER_LOGGERS", "MetricExportGuard", "guard_metric_export"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

METRIC_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
)
"""Loggers of the OTel OTLP metric exporters (the HTTP one logs its retries through its own)."""
_REFUSED = ("Connection refused", "ECONNREFUSED", "StatusCode.UNAVAILABLE")
_SHUTTING_DOWN = ("already shutdown", "Shutdown in progress")


class MetricExportGuard(logging.Filter):
    """Drops the OTLP metric exporters' records; warns once; stops retries at exit if refused.

    Args:
        where: The metrics endpoint, for the warning (credentials, query removed).
        exporters: The exporters of tasktrace's meter provider (shut down at exit if refused).
        secrets: Values never to appear in the warning (the request headers).

    Thread-safety: records come from the readers' threads and the exit; the flags are plain
    booleans set once.
    """

    def __init__(self, where: str, exporters: Sequence[Any], secrets: Iterable[str] = ()) -> None:
        """Guard ``exporters`` sending to ``where`` (see the class docstring)."""
        super().__init__()
        self.where = redact_endpoint(where)
        """The destination named in the warning."""
        self.exporters = list(exporters)
        """The exporters shut down at exit when refused."""
        self.exiting = False
        """Set by the exit handler: a refusal then ends the retries."""
        self.refused = False
        """Whether an export was refused outright (nothing listens at the endpoint)."""
        words = {w for s in (*secrets, *endpoint_secrets(where)) for w in (s, *s.split())}
        self._secrets = sorted((w for w in words if len(w) >= 4), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop ``record``; the first failure becomes the one warning (never raises)."""
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if any(mark in message for mark in _SHUTTING_DOWN):
            return False
        if any(mark in message for mark in _REFUSED):
            self.refused = True
            if self.exiting:
                self.stop()
        reason = describe_failure([message])
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        _warn(
            "metric-export-failed",
            "tasktrace: metric export to %s failed (%s); task metrics are dropped while it "
            "fails. Task files are complete; further metric export failures are not reported",
            self.where,
            reason,
        )
        return False

    def stop(self) -> None:
        """Shut the exporters down (ends their retries at once); never raises."""
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception as e:  # noqa: BLE001, PERF203 - the exit must go on
                _log.debug("tasktrace: metric exporter shutdown failed: %r", e)


def _shutdown_at_exit(provider: Any, guard: MetricExportGuard) -> None:
    guard.exiting = True
    if guard.refused:  # refused before: the last collection would only retry
        guard.stop()
    try:
        left_s = max(0.0, exit_deadline() - time.monotonic())  # shared with the spans' exit
        provider.shutdown(timeout_millis=left_s * 1000)
    except Exception as e:  # noqa: BLE001 - the exit must go on
        _log.debug("tasktrace: meter provider shutdown failed: %r", e)


def guard_metric_export(
    provider: Any, exporters: Sequence[Any], where: str, secrets: Iterable[str] = ()
) -> MetricExportGuard:
    """Guard the exporters of ``provider`` (created with ``shutdown_on_exit=False``).

    Installs the filter on :data:`METRIC_EXPORTER_LOGGERS` and the bounded exit handler.

    Returns:
        The guard (for tests: its ``refused`` flag).
    """
    guard = MetricExportGuard(where, exporters, secrets)
    for name in METRIC_EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(guard)
    atexit.register(_shutdown_at_exit, provider, guard)
    return guard
