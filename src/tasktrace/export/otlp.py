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
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

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

from tasktrace.core.redact import mask_url
from tasktrace.core.units import MAX_SECONDS, valid_seconds
from tasktrace.core.warn import WarnOnce
from tasktrace.export.environment import (
    DEFAULT,
    Resolved,
    Signal,
    environ_value,
    headers_variable,
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
        sources: Where each value came from, by field (``endpoint``, ``protocol``,
            ``timeout_s``, and ``headers.NAME`` for each header): ``GIVEN_BY(FIELD=...)`` for
            an argument, the variable's name, or ``default``.
        usable: ``False`` when OTLP/HTTP is to go to text without ``http(s)://host`` (a
            warning said so, quoting the value as set): tasktrace's live exporters leave
            such an endpoint out rather than fail at every export.
    """

    signal: Signal
    protocol: str
    endpoint: str
    headers: dict[str, str]
    timeout_s: float
    secrets: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    usable: bool = True


def _protocol(signal: Signal, configured: str | None, given: str) -> Resolved[str]:
    if configured is not None:
        return Resolved(configured, given)
    for name in (_VARIABLES[signal]["protocol"], OTEL_EXPORTER_OTLP_PROTOCOL):
        raw = environ_value(name)
        if raw is None:
            continue
        if raw.strip() in PROTOCOLS:
            return Resolved(raw.strip(), name)
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s=%r (expected http/protobuf or grpc); using %s",
            name,
            raw,
            DEFAULT_PROTOCOL,
        )
        return Resolved(DEFAULT_PROTOCOL, DEFAULT)
    return Resolved(DEFAULT_PROTOCOL, DEFAULT)


def _timeout_s(signal: Signal, configured: float | None, given: str) -> Resolved[float]:
    if configured is not None:
        return Resolved(configured, given)
    for name in (_VARIABLES[signal]["timeout"], OTEL_EXPORTER_OTLP_TIMEOUT):
        raw = environ_value(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if valid_seconds(value):
            return Resolved(value, name)
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s=%r (expected a number of seconds from 0 to %g); the "
            "exporter's default (%g s) applies",
            name,
            raw,
            MAX_SECONDS,
            DEFAULT_TIMEOUT_S,
        )
        return Resolved(DEFAULT_TIMEOUT_S, DEFAULT)
    return Resolved(DEFAULT_TIMEOUT_S, DEFAULT)


def _usable_endpoint(resolved: Resolved[str], given: str, protocol: str) -> bool:
    """Return whether OTLP/HTTP can send to ``resolved`` (gRPC takes any text).

    If not, warns once, quoting ``given``: the value as set, before tasktrace appended
    ``/v1/<signal>``.
    """
    if protocol == "grpc" or resolved.source == DEFAULT:
        return True
    try:
        parts = urlsplit(resolved.value)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        _warn(
            f"endpoint:{resolved.source}",
            "tasktrace: %s=%r is not an http:// or https:// URL, which OTLP/HTTP needs "
            "(write http://host:port); nothing is exported there",
            resolved.source,
            mask_url(given),
        )
    return usable


def _endpoint(
    signal: Signal, protocol: str, configured: str | None, given: str
) -> tuple[Resolved[str], str]:
    """Return the endpoint requests go to, and the value as set (without the path)."""
    path = f"/v1/{signal}"
    base, source = configured, given
    if base is None:
        specific_name = _VARIABLES[signal]["endpoint"]
        specific = environ_value(specific_name)
        if specific is not None:  # a per-signal URL is used as is
            return Resolved(specific.strip(), specific_name), specific.strip()
        base = environ_value(OTEL_EXPORTER_OTLP_ENDPOINT)
        source = OTEL_EXPORTER_OTLP_ENDPOINT
        if base is None:
            base, source = _DEFAULT_ENDPOINTS[protocol], DEFAULT
    base = base.strip()
    if protocol == "grpc":
        return Resolved(base, source), base
    head, mark, query = base.partition("?")  # the path goes before a query, which stays
    if head.rstrip("/").endswith(path):
        return Resolved(base, source), base
    return Resolved(head.rstrip("/") + path + mark + query, source), base


def otlp_settings(
    signal: Signal,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    given_by: str = "configure",
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
        given_by: The function the arguments were given to, for :attr:`OtlpSettings.sources`
            (``configure(endpoint=...)``).

    Returns:
        The settings, with the source of each; every invalid variable met was warned about
        once (see the module docstring).
    """
    chosen = _protocol(signal, protocol, f"{given_by}(protocol=...)")
    resolved_endpoint, given = _endpoint(
        signal, chosen.value, endpoint, f"{given_by}(endpoint=...)"
    )
    usable = _usable_endpoint(resolved_endpoint, given, chosen.value)
    resolved_timeout = _timeout_s(signal, timeout_s, f"{given_by}(timeout_s=...)")
    header_variable, _ = headers_variable(signal)
    merged = {k: (v, header_variable) for k, v in otlp_headers(signal).items()}
    merged.update({k.lower(): (v, f"{given_by}(headers=...)") for k, v in (headers or {}).items()})
    values = {k: v for k, (v, _) in merged.items()}
    return OtlpSettings(
        signal=signal,
        protocol=chosen.value,
        endpoint=resolved_endpoint.value,
        headers=values,
        timeout_s=resolved_timeout.value,
        secrets=(*values.values(), *headers_variable_texts(signal)),
        usable=usable,
        sources={
            "protocol": chosen.source,
            "endpoint": resolved_endpoint.source,
            "timeout_s": resolved_timeout.source,
            **{f"headers.{k}": source for k, (_, source) in merged.items()},
        },
    )


class ParsedHeaders(dict[str, str]):
    """Parsed headers, true even when empty (so no exporter falls back to the variable)."""

    def __bool__(self) -> bool:
        """Return ``True``, even when empty (see the module docstring)."""
        return True
