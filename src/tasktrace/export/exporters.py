"""The exporters tasktrace builds: one builder for OTLP spans, metrics and replay.

:func:`new_otlp_exporter` is the one place an OTel OTLP exporter is created, for every signal
and protocol, from the :class:`~tasktrace.export.otlp.OtlpSettings` that
:func:`~tasktrace.export.otlp.otlp_settings` resolved. A missing gRPC package
(``tasktrace[grpc]``) is an :class:`ImportError` saying what to install; the live exporters
(:func:`span_exporters`, :func:`metric_exporters`) turn it into one warning and go on without
OTLP, ``tasktrace replay`` into its error.

:func:`span_exporters` builds what :func:`tasktrace.configure` and the ``OTEL_*`` variables ask
for, each wrapped in a :class:`~tasktrace.export.guarded.GuardedSpanExporter`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.trace.export import SpanExporter

from tasktrace.core.settings import get_settings
from tasktrace.core.warn import WarnOnce
from tasktrace.export.config import ExportConfig, check_environment, sdk_disabled
from tasktrace.export.environment import DEFAULT, Resolved, sdk_parsing_quiet
from tasktrace.export.guarded import GuardedSpanExporter
from tasktrace.export.otlp import OtlpSettings, ParsedHeaders, otlp_settings
from tasktrace.export.request_size import MAX_REQUEST_BYTES

__all__ = [
    "metric_exporter_names",
    "metric_exporters",
    "new_otlp_exporter",
    "span_exporter_names",
    "span_exporters",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


def new_otlp_exporter(settings: OtlpSettings) -> Any:
    """Create the OTel OTLP exporter of ``settings``' signal and protocol.

    Args:
        settings: From :func:`otlp_settings`.

    Returns:
        An ``OTLPSpanExporter`` (traces) or ``OTLPMetricExporter`` (metrics), HTTP or gRPC.

    Raises:
        ImportError: gRPC was asked for but ``tasktrace[grpc]`` is not installed (the message
            says what to install).
    """
    headers = ParsedHeaders(settings.headers)
    with sdk_parsing_quiet():
        if settings.protocol == "grpc":
            exporter_class = _grpc_class(settings)
            return exporter_class(
                endpoint=settings.endpoint, headers=headers, timeout=settings.timeout_s
            )
        if settings.signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            return OTLPSpanExporter(
                endpoint=settings.endpoint, headers=headers, timeout=settings.timeout_s
            )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )

        return OTLPMetricExporter(
            endpoint=settings.endpoint, headers=headers, timeout=settings.timeout_s
        )


def _grpc_class(settings: OtlpSettings) -> Any:
    try:
        if settings.signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            return OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )
    except ImportError:
        raise ImportError(
            "OTLP/gRPC needs the gRPC exporter: pip install 'tasktrace[grpc]'"
        ) from None
    return OTLPMetricExporter


def _otlp_or_warn(settings: OtlpSettings) -> Any:
    """Return :func:`new_otlp_exporter`'s exporter, or ``None``.

    ``None`` with one warning when gRPC is missing, and for an endpoint OTLP/HTTP cannot send
    to (already warned about).
    """
    if not settings.usable:
        return None
    try:
        return new_otlp_exporter(settings)
    except ImportError as e:
        _warn(f"no-otlp:{settings.signal}", "tasktrace: %s; no OTLP %s export", e, settings.signal)
        return None


def span_exporter_names(config: ExportConfig) -> Resolved[list[str | SpanExporter]]:
    """Return the span exporters ``config`` and the environment ask for, and why.

    Args:
        config: What :func:`tasktrace.configure` was given.

    Returns:
        Names (lower case; ``none`` left out) and exporter objects: ``OTEL_SDK_DISABLED=true``
        gives none; else ``configure(exporters=...)``, else ``OTEL_TRACES_EXPORTER``, else
        ``otlp`` when an endpoint is set (``configure(endpoint=...)``,
        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``), else none;
        outside ``configure(exporters=...)``, the ``otlp_json_dir`` setting adds
        ``tasktrace_otlp_json``. The source names what decided (``default``: nothing).
    """
    if sdk_disabled():
        return Resolved([], OTEL_SDK_DISABLED)
    if config.exporters is not None:
        chosen: list[str | SpanExporter] = list(config.exporters)
        source = "configure(exporters=...)"
    else:
        raw = os.environ.get(OTEL_TRACES_EXPORTER, "").strip()
        endpoint = _endpoint_setting(config)
        if raw:
            chosen = [n.strip() for n in raw.split(",") if n.strip()]
            source = OTEL_TRACES_EXPORTER
        elif endpoint is not None:
            chosen, source = ["otlp"], endpoint
        else:
            chosen, source = [], DEFAULT
        settings = get_settings()
        if settings.otlp_json_dir is not None and "tasktrace_otlp_json" not in chosen:
            chosen.append("tasktrace_otlp_json")  # the otlp_json_dir setting asks for files
            origin = settings.origins.get(("otlp_json_dir",), "otlp_json_dir")
            source = origin if source == DEFAULT else f"{source}, {origin}"
    lowered = [n.lower() if isinstance(n, str) else n for n in chosen]
    return Resolved([n for n in lowered if not (isinstance(n, str) and n == "none")], source)


def _endpoint_setting(config: ExportConfig) -> str | None:
    """Return what set an endpoint (an argument or a variable's name), ``None`` if nothing."""
    if config.endpoint:
        return "configure(endpoint=...)"
    for name in (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT):
        if os.environ.get(name):
            return name
    return None


def _otlp_exporter(config: ExportConfig) -> GuardedSpanExporter | None:
    settings = otlp_settings(
        "traces",
        endpoint=config.endpoint,
        protocol=config.protocol,
        headers=config.headers,
        timeout_s=config.timeout_s,
    )
    exporter = _otlp_or_warn(settings)
    if exporter is None:
        return None
    return GuardedSpanExporter(
        exporter,
        settings.endpoint,
        max_request_bytes=MAX_REQUEST_BYTES,
        secrets=settings.secrets,
    )


def _named_exporter(name: str, source: str) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()

    for ep in entry_points(group="opentelemetry_traces_exporter"):
        if ep.name == name:
            return ep.load()()  # type: ignore[no-any-return]
    if source == OTEL_TRACES_EXPORTER:
        _log.warning("tasktrace: unknown %s name %r; ignored", OTEL_TRACES_EXPORTER, name)
    else:  # configure(exporters=...): name the argument the program gave
        _log.warning("tasktrace: unknown span exporter name %r in %s; ignored", name, source)
    return None


def span_exporters(config: ExportConfig) -> list[GuardedSpanExporter]:
    """Create the guarded span exporters ``config`` and the environment ask for.

    Returns:
        One :class:`~tasktrace.export.guarded.GuardedSpanExporter` per exporter; empty when nothing
        is configured or ``OTEL_SDK_DISABLED=true`` (then no exporter object is even built).
        An exporter that cannot be created is left out with a warning.

    """
    check_environment()
    exporters: list[GuardedSpanExporter] = []
    names = span_exporter_names(config)
    for item in names.value:
        try:
            if isinstance(item, SpanExporter):
                guarded: GuardedSpanExporter | None = GuardedSpanExporter(item, type(item).__name__)
            elif item == "otlp":
                guarded = _otlp_exporter(config)
            else:
                named = _named_exporter(item, names.source)
                guarded = GuardedSpanExporter(named, item) if named is not None else None
        except Exception as e:  # noqa: BLE001 - a bad exporter must not break tasks
            _log.warning("tasktrace: cannot create the %r span exporter (%s); ignored", item, e)
            guarded = None
        if guarded is not None:
            exporters.append(guarded)
    return exporters


def metric_exporter_names() -> Resolved[list[str]]:
    """Return the metric exporters ``OTEL_METRICS_EXPORTER`` names (default ``otlp``), and why.

    Names are lower case, as written (``none`` and unknown names included: :func:`metric_exporters`
    skips them); the source is ``OTEL_METRICS_EXPORTER`` or ``default``.
    """
    raw = os.environ.get(OTEL_METRICS_EXPORTER, "").strip().lower()
    if not raw:
        return Resolved(["otlp"], DEFAULT)
    return Resolved([n.strip() for n in raw.split(",") if n.strip()], OTEL_METRICS_EXPORTER)


def metric_exporters(wrap_otlp: Callable[[Any, OtlpSettings], Any] | None = None) -> list[Any]:
    """Create the metric exporters ``OTEL_METRICS_EXPORTER`` names (default ``otlp``).

    Args:
        wrap_otlp: Applied to each OTLP exporter with its settings; its result is used in
            the exporter's place (tasktrace's meter provider: a
            :class:`~tasktrace.export.metric_guard.GuardedMetricExporter`).

    An exporter that cannot be created is left out with a warning (gRPC without
    ``tasktrace[grpc]``: the same warning as for spans).
    """
    exporters: list[Any] = []
    for name in metric_exporter_names().value:
        try:
            if name == "otlp":
                settings = otlp_settings("metrics")
                otlp = _otlp_or_warn(settings)
                if otlp is not None:
                    exporters.append(wrap_otlp(otlp, settings) if wrap_otlp else otlp)
            elif name == "console":
                from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
                    ConsoleMetricExporter,
                )

                exporters.append(ConsoleMetricExporter())
            elif name and name != "none":
                _log.warning(
                    "tasktrace: unsupported %s name %r; ignored", OTEL_METRICS_EXPORTER, name
                )
        except Exception as e:  # noqa: BLE001, PERF203 - a bad exporter must not break tasks
            _log.warning("tasktrace: cannot create the %r metric exporter (%s); ignored", name, e)
    return exporters
