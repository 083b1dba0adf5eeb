"""The settings of an OTLP exporter, parsed from the environment (and the exporters' arguments).

Every OTLP exporter tasktrace creates — the span exporter of a run, the metric exporter and the
replay exporter — comes from :func:`tasktrace.export.exporters.new_otlp_exporter`, given the
:class:`OtlpSettings` that :func:`otlp_settings` resolved (arguments over the per-signal
``OTEL_EXPORTER_OTLP_TRACES_*`` / ``_METRICS_*`` variables, over the generic ones, over the
defaults; headers parsed by :func:`tasktrace.export.environment.otlp_headers`). Endpoint,
headers and
timeout are always passed as arguments, so the exporters never fall back to parsing the
variables themselves:

- the gRPC exporters read the variable when ``headers`` is falsy (``headers or
  environ.get(...)``), so an empty set of headers is passed as a mapping that is true even when
  empty (:class:`ParsedHeaders`);
- the HTTP exporters parse the headers variable in every case (and add what they find under the
  arguments' headers, which win): while tasktrace builds one, the records of that parser
  (which quote the bad item, secret and all) are dropped
  (:func:`~tasktrace.export.environment.sdk_parsing_quiet`). tasktrace has warned about the variable
  already, without its value; the values it parsed win.

The exporters still read the TLS (``OTEL_EXPORTER_OTLP_CERTIFICATE`` ...) and compression
variables themselves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
)

from tasktrace.core.warn import WarnOnce
from tasktrace.export.environment import (
    Signal,
    environ_value,
    headers_variable_texts,
    otlp_headers,
)

__all__ = [
    "DEFAULT_PROTOCOL",
    "DEFAULT_TIMEOUT_S",
    "PROTOCOLS",
    "OtlpSettings",
    "ParsedHeaders",
    "otlp_settings",
]

_warn = WarnOnce(logging.getLogger(__name__))

DEFAULT_PROTOCOL: Final = "http/protobuf"
"""OTLP protocol when none is configured."""
PROTOCOLS: Final = ("http/protobuf", "grpc")
"""The OTLP protocols tasktrace's exporters speak."""
DEFAULT_TIMEOUT_S: Final = 10.0
"""Timeout of one export request, retries included, in seconds, when none is configured."""
_DEFAULT_ENDPOINTS: Final = {
    "http/protobuf": "http://localhost:4318",
    "grpc": "http://localhost:4317",
}


_VARIABLES: Final[dict[Signal, dict[str, str]]] = {
    "traces": {
        "endpoint": OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        "protocol": OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
        "timeout": OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    },
    "metrics": {
        "endpoint": OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
        "protocol": OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
        "timeout": OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    },
}


@dataclass(frozen=True)
class OtlpSettings:
    """Everything an OTLP exporter of one signal needs, parsed (see :func:`otlp_settings`).

    Attributes:
        signal: ``"traces"`` or ``"metrics"``.
        protocol: ``"http/protobuf"`` or ``"grpc"``.
        endpoint: Where requests go: the full URL for HTTP (``.../v1/traces``), the
            ``http(s)://host:port`` URL for gRPC.
        headers: Header name (lower case) → value; secret, never to be logged.
        timeout_s: Timeout of one export, retries included, in seconds.
        secrets: Texts never to be logged: the header values, and every item value of the
            headers variable, valid or not (see
            :func:`~tasktrace.export.environment.headers_variable_texts`).
    """

    signal: Signal
    protocol: str
    endpoint: str
    headers: dict[str, str]
    timeout_s: float
    secrets: tuple[str, ...] = ()


def _protocol(signal: Signal, configured: str | None) -> str:
    if configured is not None:
        return configured
    for name in (_VARIABLES[signal]["protocol"], OTEL_EXPORTER_OTLP_PROTOCOL):
        raw = environ_value(name)
        if raw is None:
            continue
        if raw.strip() in PROTOCOLS:
            return raw.strip()
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s=%r (expected http/protobuf or grpc); using %s",
            name,
            raw,
            DEFAULT_PROTOCOL,
        )
        return DEFAULT_PROTOCOL
    return DEFAULT_PROTOCOL


def _timeout_s(signal: Signal, configured: float | None) -> float:
    if configured is not None:
        return configured
    for name in (_VARIABLES[signal]["timeout"], OTEL_EXPORTER_OTLP_TIMEOUT):
        raw = environ_value(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if value >= 0 and math.isfinite(value):
            return value
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s=%r (expected a non-negative number of seconds); the "
            "exporter's default (%g s) applies",
            name,
            raw,
            DEFAULT_TIMEOUT_S,
        )
        return DEFAULT_TIMEOUT_S
    return DEFAULT_TIMEOUT_S


def _endpoint(signal: Signal, protocol: str, configured: str | None) -> str:
    path = f"/v1/{signal}"
    if configured is None:
        specific = environ_value(_VARIABLES[signal]["endpoint"])
        if specific is not None:
            return specific.strip()  # a per-signal URL is used as is
        configured = environ_value(OTEL_EXPORTER_OTLP_ENDPOINT) or _DEFAULT_ENDPOINTS[protocol]
    configured = configured.strip()
    if protocol == "grpc" or configured.rstrip("/").endswith(path):
        return configured
    return configured.rstrip("/") + path


def otlp_settings(
    signal: Signal,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> OtlpSettings:
    """Resolve one OTLP exporter's settings: each argument over its variables, over defaults.

    Args:
        signal: ``"traces"`` or ``"metrics"``; its per-signal variables
            (``OTEL_EXPORTER_OTLP_TRACES_*``) come before the generic ones.
        endpoint: Base URL (``http://host:4318``; for HTTP ``/v1/<signal>`` is appended unless
            present), else the per-signal endpoint variable (used as is), else the generic one
            (a base URL), else ``localhost`` on the protocol's default port.
        protocol: ``"http/protobuf"`` or ``"grpc"``, else the variables, else http/protobuf.
        headers: Headers added over those of the variables (same name: the argument wins).
        timeout_s: Seconds, else the variables, else 10.

    Returns:
        The settings; every invalid variable met was warned about once (see the module
        docstring).
    """
    chosen = _protocol(signal, protocol)
    merged = {**otlp_headers(signal), **{k.lower(): v for k, v in (headers or {}).items()}}
    return OtlpSettings(
        signal=signal,
        protocol=chosen,
        endpoint=_endpoint(signal, chosen, endpoint),
        headers=merged,
        timeout_s=_timeout_s(signal, timeout_s),
        secrets=(*merged.values(), *headers_variable_texts(signal)),
    )


class ParsedHeaders(dict[str, str]):
    """Parsed headers, true even when empty (so no exporter falls back to the variable)."""

    def __bool__(self) -> bool:
        """Return ``True``, even when empty (see the module docstring)."""
        return True
