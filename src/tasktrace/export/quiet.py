"""Silence the OTel exporters' own logging during tasktrace's exports; keep what it says.

The OTel OTLP exporters log every failed attempt ("Transient error ... retrying in 1.18s"),
every aborted retry and a final "Failed to export ...". tasktrace's guarded exporters (spans:
:mod:`tasktrace.export.guarded`, task metrics: :mod:`tasktrace.export.metric_guard`) export
inside :func:`quiet_export`: on that thread, and only there, the exporters' records are dropped
and their messages handed to an :class:`ExportMessages`, from which the guard's one warning
takes its reason (:func:`~tasktrace.export.failure.describe_failure`). The user's own exporters,
on their own threads, still log.

The filter goes first on each logger: the gRPC exporter's logger has the SDK's
``DuplicateFilter``, which drops a record whose format string was logged in the last 20 s,
so a span export failing just after a metric export would otherwise lose its only message.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tasktrace.core.forksafe import renew_after_fork

__all__ = ["SDK_EXPORTER_LOGGERS", "ExportMessages", "quiet_export"]

SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.common._internal",
    "opentelemetry.sdk._shared_internal",
)
"""Loggers of the OTel exporters (and batch processor) silenced during a guarded export (the
gRPC metric exporter logs through the gRPC base exporter's logger, as spans do)."""

_MAX_MESSAGES = 16
"""Messages kept per export (the first ones and the last one)."""


class ExportMessages:
    """The OTel exporters' warnings during one guarded export, oldest first.

    Args:
        on_message: Called with each message as it is logged, on the exporting thread (to
            notice a refusal while the exporter still retries); must not raise.

    Attributes:
        messages: Up to 16 messages (the first 15 and the latest), each cut to 1,000 chars.
        stopped: Set by the guard when it shut the exporter down during this export (at
            exit): messages after it are the shutdown's, not the failure's cause.

    Thread-safety: written by the exporting thread; read by the exit's thread (a copy of the
    list is enough: appends are atomic).
    """

    def __init__(self, on_message: Callable[[str], None] | None = None) -> None:
        """Collect messages (see the class docstring)."""
        self.messages: list[str] = []
        self.stopped = False
        self._on_message = on_message

    def add(self, message: str) -> None:
        """Keep ``message`` and pass it to ``on_message``."""
        if len(self.messages) >= _MAX_MESSAGES:
            self.messages.pop()  # keep the first ones, and the latest as the last one
        self.messages.append(message[:1000])
        if self._on_message is not None:
            self._on_message(message)


_exporting = threading.local()


class _QuietWhileGuarded(logging.Filter):
    """Drop records logged on a thread inside a guarded export; keep their messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        collector: ExportMessages | None = getattr(_exporting, "collector", None)
        if collector is None:
            return True
        if record.levelno >= logging.WARNING:
            try:
                collector.add(record.getMessage())
            except Exception:  # noqa: BLE001 - logging must never break the export
                return False
        return False


_filter = _QuietWhileGuarded()
_filter_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_filter_lock")
_filter_installed = False


def _install_filter() -> None:
    global _filter_installed  # noqa: PLW0603 - the filter is installed once per process
    with _filter_lock:
        if not _filter_installed:
            for name in SDK_EXPORTER_LOGGERS:
                logging.getLogger(name).filters.insert(0, _filter)  # before DuplicateFilter
            _filter_installed = True


@contextmanager
def quiet_export(collector: ExportMessages) -> Iterator[ExportMessages]:
    """Within the block, on this thread, the exporters' records go to ``collector`` only.

    Nests: an inner block's collector applies until it ends, then the outer one again.
    """
    _install_filter()
    outer = getattr(_exporting, "collector", None)
    _exporting.collector = collector
    try:
        yield collector
    finally:
        _exporting.collector = outer
