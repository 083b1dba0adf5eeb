"""The meter provider task metrics go to: the global one, or a private one tasktrace creates.

:func:`global_meter_provider` decides, for :mod:`tasktrace.export.metrics`: a meter provider
installed globally (the user's, Logfire's, ``opentelemetry-instrument``'s) is used as it is;
while the global is still the API's proxy, tasktrace creates an SDK ``MeterProvider`` (the
traces' resource, a ``PeriodicExportingMetricReader`` for each exporter that
``OTEL_METRICS_EXPORTER`` names, each OTLP one wrapped in a
:class:`~tasktrace.export.metric_guard.GuardedMetricExporter`, the exit bounded by
:func:`~tasktrace.export.metric_guard.guard_metric_export`) when the ``metrics`` setting is on
or, unset, when the environment configures metrics export. That provider is tasktrace's
alone, never installed globally (as tasktrace's tracer provider): a program that installs its
own meter provider later is not refused by OpenTelemetry ("Overriding of current
MeterProvider is not allowed"), and tasktrace's next top-level task finds it
(:func:`tasktrace.export.metrics.top_level_metrics`).

Thread-safety: call under the caller's lock.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import metrics
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_METRICS_ENDPOINT

from tasktrace.export.exporters import metric_exporters
from tasktrace.export.metric_guard import GuardedMetricExporter, guard_metric_export
from tasktrace.export.provider import build_resource

__all__ = ["export_configured", "global_meter_provider"]


def global_meter_provider(setting: bool | None) -> tuple[Any, bool] | None:
    """Return the meter provider for task metrics, creating one where needed; ``None``: none.

    Args:
        setting: The ``metrics`` setting (``True`` on, ``None`` auto); never ``False``.

    Returns:
        ``(provider, created)``: the global meter provider (somebody else's, found installed,
        whose owner reads the ``OTEL_*`` variables; ``created`` false), or the private one
        tasktrace just created (``created`` true). ``None`` when the global is the API's
        proxy and metrics are neither on nor configured by the environment
        (``OTEL_METRICS_EXPORTER`` naming an exporter, ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``).
    """
    provider: Any = metrics.get_meter_provider()
    if not _is_proxy(provider):
        return provider, False
    if setting is None and not export_configured():
        return None
    # The metrics SDK is imported only when tasktrace creates a meter provider.
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - see above
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415 - see above
        PeriodicExportingMetricReader,
    )

    # OTLP: one warning per endpoint on failure, SDK messages silenced, a bounded exit
    exporters = metric_exporters(
        lambda otlp, settings: GuardedMetricExporter(otlp, settings.endpoint, settings.secrets)
    )
    readers = [PeriodicExportingMetricReader(e) for e in exporters]
    created = MeterProvider(
        resource=build_resource(), metric_readers=readers, shutdown_on_exit=False
    )
    guard_metric_export(created, exporters)
    return created, True


def export_configured() -> bool:
    """Whether the environment asks for metrics export.

    True when ``OTEL_METRICS_EXPORTER`` names an exporter (not ``none``) or, without it,
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set (read from ``os.environ`` at each call).
    """
    names = os.environ.get(OTEL_METRICS_EXPORTER, "").strip().lower()
    if names:
        return any(n.strip() not in ("", "none") for n in names.split(","))
    return bool(os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT))


def _is_proxy(provider: object) -> bool:
    try:
        # The API's proxy class is private: looked up where needed, in case a release renames it.
        from opentelemetry.metrics._internal import _ProxyMeterProvider  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a future API without the private class
        return type(provider).__name__ == "_ProxyMeterProvider"
    return isinstance(provider, _ProxyMeterProvider)
