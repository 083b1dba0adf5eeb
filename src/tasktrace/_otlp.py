"""Build the OTel project's OTLP exporters (HTTP or gRPC, spans or metrics) from parsed settings.

Every OTLP exporter tasktrace creates — the span exporter of a run (:mod:`tasktrace._config`),
the metric exporter (:mod:`tasktrace._metrics`) and the replay exporter
(:mod:`tasktrace.formats.replay`) — comes from :func:`new_otlp_exporter`, given the
:class:`~tasktrace._otel_env.OtlpSettings` that :func:`~tasktrace._otel_env.otlp_settings`
parsed. Endpoint, headers and timeout are always passed as arguments, so the exporters never
fall back to parsing the variables themselves:

- the gRPC exporters read the variable when ``headers`` is falsy (``headers or
  environ.get(...)``), so an empty set of headers is passed as a mapping that is true even when
  empty (:class:`ParsedHeaders`);
- the HTTP exporters parse the headers variable in every case (and add what they find under the
  arguments' headers, which win): while tasktrace builds one, the records of that parser
  (which quote the bad item, secret and all) are dropped
  (:func:`~tasktrace._otel_env.sdk_parsing_quiet`). tasktrace has warned about the variable
  already, without its value; the values it parsed win.
"""

from __future__ import annotations

from typing import Any

from tasktrace._otel_env import OtlpSettings, sdk_parsing_quiet

__all__ = ["ParsedHeaders", "new_otlp_exporter"]

class ParsedHeaders(dict[str, str]):
    """Parsed headers, true even when empty (so no exporter falls back to the variable)."""

    def __bool__(self) -> bool:
        """Return ``True``, even when empty (see the module docstring)."""
        return True


def new_otlp_exporter(settings: OtlpSettings) -> Any:
    """Create the OTel OTLP exporter of ``settings``' signal and protocol.

    Args:
        settings: From :func:`~tasktrace._otel_env.otlp_settings`.

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
