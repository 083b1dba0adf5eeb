"""The standard ``OTEL_*`` variables, parsed and checked by tasktrace and never by the SDK.

Left to themselves, the OpenTelemetry SDK and its exporters read these variables whenever an
argument is not given, and log an item they cannot parse *verbatim*
(``Header format invalid! ... Authorization: Bearer tok-123``), so a token in a mistyped
variable ends up on stderr. tasktrace parses every variable it uses here, warns **once per
process per variable** with a line naming the variable and what is used instead (never the
value of a header or resource variable), and hands the SDK the parsed values:

- :func:`otlp_settings`: protocol, endpoint, headers and timeout of one OTLP exporter, for
  traces or metrics (the per-signal variable over the generic one); the one parsed-environment
  function behind every exporter tasktrace builds (:mod:`tasktrace._otlp`).
- :func:`resource_attributes` and :func:`service_name`: ``OTEL_RESOURCE_ATTRIBUTES`` and
  ``OTEL_SERVICE_NAME``; :func:`environment_resource` builds a resource from them without
  :meth:`Resource.create <opentelemetry.sdk.resources.Resource.create>` (which would parse the
  variable again and log bad items).
- :func:`traces_sampler`: ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``.

Where the SDK parses these variables anyway — its headers parser inside the OTLP/HTTP
exporters, and :meth:`Resource.create` wherever it runs (the user's own providers, or at the
import of ``opentelemetry.sdk._logs``, which Logfire's pydantic plugin brings in) — a filter on
its two loggers, installed when this module is imported (before tasktrace imports pydantic),
replaces the quoted item with ``<not shown>`` in every record; records from a parse that
tasktrace itself causes while building an exporter (:func:`sdk_parsing_quiet`) are dropped,
tasktrace having warned already.

Formats, as the OpenTelemetry specification gives them:

- **Headers** are a W3C-baggage-like list, ``key=value`` items separated by commas; keys are
  HTTP tokens, values percent-encoded (decoded here; bytes that are not UTF-8 become U+FFFD, as
  W3C Baggage says). As the OTel Python SDK does, a value may also hold plain spaces
  (``authorization=Bearer tok``). An invalid item is left out; the others are sent.
- **Resource attributes** are ``key=value`` items separated by commas, keys and values
  percent-encoded (``,`` and ``=`` must be). On any error (an item without ``=`` or a key, a
  bad percent-escape, bytes that are not UTF-8) the **whole variable is ignored**, as the
  specification says.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPERIMENTAL_RESOURCE_DETECTORS,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
    get_aggregated_resources,
)
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.version import __version__ as sdk_version

from tasktrace.meters._base import WarnOnce

try:  # SDK >= 1.37 adds service.instance.id in Resource.create; older ones do not
    from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector
except ImportError:  # pragma: no cover - depends on the installed SDK
    ServiceInstanceIdResourceDetector = None  # type: ignore[assignment,misc]

__all__ = [
    "DEFAULT_PROTOCOL",
    "DEFAULT_SAMPLER",
    "DEFAULT_TIMEOUT_S",
    "OtlpSettings",
    "Signal",
    "environment_resource",
    "otlp_headers",
    "otlp_settings",
    "parse_headers",
    "parse_resource_attributes",
    "resource_attributes",
    "sdk_parsing_quiet",
    "service_name",
    "traces_sampler",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

Signal = Literal["traces", "metrics"]
"""The OTLP signal an exporter sends: its per-signal variables and its HTTP path."""

DEFAULT_PROTOCOL: Final = "http/protobuf"
"""OTLP protocol when none is configured."""
PROTOCOLS: Final = ("http/protobuf", "grpc")
"""The OTLP protocols tasktrace's exporters speak."""
DEFAULT_TIMEOUT_S: Final = 10.0
"""Timeout of one export request, retries included, in seconds, when none is configured."""
DEFAULT_SAMPLER: Final = "parentbased_always_on"
"""``OTEL_TRACES_SAMPLER`` when unset or invalid (the SDK's default)."""
_DEFAULT_ENDPOINTS: Final = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}

_VARIABLES: Final[dict[Signal, dict[str, str]]] = {
    "traces": {
        "endpoint": OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        "headers": OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        "protocol": OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
        "timeout": OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    },
    "metrics": {
        "endpoint": OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
        "headers": OTEL_EXPORTER_OTLP_METRICS_HEADERS,
        "protocol": OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
        "timeout": OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    },
}
_GENERIC: Final = {
    "endpoint": OTEL_EXPORTER_OTLP_ENDPOINT,
    "headers": OTEL_EXPORTER_OTLP_HEADERS,
    "protocol": OTEL_EXPORTER_OTLP_PROTOCOL,
    "timeout": OTEL_EXPORTER_OTLP_TIMEOUT,
}

# W3C Baggage / RFC 7230: a key is a token; a value is baggage-octets (printable ASCII but
# SP " , ; \), here with SP allowed inside as the OTel Python SDK's "liberal" parser allows.
_OWS = r"[ \t]*"
_KEY = r"[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+"
_VALUE = r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_HEADER_ITEM = re.compile(rf"{_OWS}({_KEY}){_OWS}={_OWS}({_VALUE}){_OWS}")
_KEY_ONLY = re.compile(_KEY)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


# ----- the SDK's own parsers ---------------------------------------------------------------------

SDK_PARSER_LOGGERS: Final = ("opentelemetry.util.re", "opentelemetry.sdk.resources")
"""Loggers of the SDK's parsers of the headers and resource variables, which quote bad items."""
_ECHOES: Final = ("Header format invalid!", "Invalid key value resource attribute pair")
_NOT_SHOWN: Final = "<not shown: it may hold a secret>"
_quiet = threading.local()


class _NoEnvironmentEchoes(logging.Filter):
    """Hide the item the SDK's parsers quote (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(_ECHOES):
            return True
        if getattr(_quiet, "active", False):
            return False
        if isinstance(record.args, tuple) and record.args:
            record.args = (_NOT_SHOWN, *record.args[1:])
        return True


_echo_filter = _NoEnvironmentEchoes()
for _logger_name in SDK_PARSER_LOGGERS:
    logging.getLogger(_logger_name).addFilter(_echo_filter)


@contextmanager
def sdk_parsing_quiet() -> Iterator[None]:
    """Drop the SDK parsers' records on this thread meanwhile (tasktrace warns itself)."""
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = False


def _environ(name: str) -> str | None:
    """Return variable ``name``, ``None`` when unset or blank (as the SDK treats blank)."""
    raw = os.environ.get(name)
    return raw if raw is not None and raw.strip() else None


# ----- headers ----------------------------------------------------------------------------------


def parse_headers(raw: str) -> tuple[dict[str, str], list[int], int]:
    """Parse a headers variable's value (format in the module docstring).

    Args:
        raw: The variable's value, e.g. ``"authorization=Bearer%20tok,x-team=ml"``.

    Returns:
        ``(headers, bad, count)``: header name (lower case) → decoded value; the 1-based
        positions of the items left out; the number of non-empty items.
    """
    headers: dict[str, str] = {}
    bad: list[int] = []
    items = [item for item in raw.split(",") if item.strip()]
    for number, item in enumerate(items, 1):
        match = _HEADER_ITEM.fullmatch(item)
        if match is None:
            bad.append(number)
            continue
        name = unquote(match.group(1)).lower()
        value = unquote(match.group(2).strip())
        if not _KEY_ONLY.fullmatch(name) or _CONTROL.search(value):
            bad.append(number)
            continue
        headers[name] = value
    return headers, bad, len(items)


def otlp_headers(signal: Signal) -> dict[str, str]:
    """Return the parsed headers of ``signal``'s OTLP exporter (per-signal variable first).

    An invalid item is left out with one warning naming the variable and the item's position,
    never its text.
    """
    name = _VARIABLES[signal]["headers"]
    raw = _environ(name)
    if raw is None:
        name = OTEL_EXPORTER_OTLP_HEADERS
        raw = _environ(name)
    if raw is None:
        return {}
    headers, bad, count = parse_headers(raw)
    if bad:
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s: item %s of %d is not key=value with a percent-encoded "
            "value (values are not shown); %s",
            name,
            ", ".join(map(str, bad)),
            count,
            "that header is not sent" if len(bad) == 1 else "those headers are not sent",
        )
    return headers


# ----- resource ---------------------------------------------------------------------------------


def _decode_strict(text: str) -> str:
    """Percent-decode ``text``; ``ValueError`` for a bad escape or bytes that are not UTF-8."""
    if _BAD_ESCAPE.search(text):
        raise ValueError("bad percent-escape")
    return unquote(text, errors="strict")


def parse_resource_attributes(raw: str) -> tuple[dict[str, str] | None, int, int]:
    """Parse an ``OTEL_RESOURCE_ATTRIBUTES`` value (format in the module docstring).

    Returns:
        ``(attributes, bad, count)``: key → decoded value, or ``None`` when an item is invalid
        (then the whole value is to be ignored); the 1-based position of the first invalid
        item (0: none); the number of non-empty items.
    """
    attributes: dict[str, str] = {}
    items = [item for item in raw.split(",") if item.strip()]
    for number, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        try:
            decoded_key = _decode_strict(key.strip()) if sep else ""
            decoded_value = _decode_strict(value.strip())
        except ValueError:  # UnicodeDecodeError is a ValueError too
            decoded_key = ""
        if not decoded_key:  # no "=", no key, or a key or value that does not decode
            return None, number, len(items)
        attributes[decoded_key] = decoded_value
    return attributes, 0, len(items)


def resource_attributes() -> dict[str, str]:
    """Return ``OTEL_RESOURCE_ATTRIBUTES`` parsed; empty (with one warning) when invalid."""
    raw = _environ(OTEL_RESOURCE_ATTRIBUTES)
    if raw is None:
        return {}
    attributes, bad, count = parse_resource_attributes(raw)
    if attributes is None:
        _warn(
            f"env:{OTEL_RESOURCE_ATTRIBUTES}",
            "tasktrace: invalid %s: item %d of %d is not key=value with a percent-encoded "
            "key and value (values are not shown); the whole variable is ignored, as the "
            "OpenTelemetry specification says",
            OTEL_RESOURCE_ATTRIBUTES,
            bad,
            count,
        )
        return {}
    return attributes


def service_name(configured: str | None, attributes: Mapping[str, Any], default: str) -> str:
    """Return ``service.name`` by the precedence the OTel specification gives.

    Args:
        configured: ``configure(service_name=...)`` (tasktrace's own, above all).
        attributes: Resource attributes given in code (their ``service.name`` comes next).
        default: Used when nothing else names the service.

    Returns:
        The first of: ``configured``; ``service.name`` in ``attributes``; ``OTEL_SERVICE_NAME``;
        ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``; ``default``.
    """
    for candidate in (
        configured,
        attributes.get(SERVICE_NAME),
        _environ(OTEL_SERVICE_NAME),
        resource_attributes().get(SERVICE_NAME),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return default


def _detected_resource() -> Resource:
    """``telemetry.sdk.*`` and what the SDK's resource detectors find, but the ``otel`` one.

    :meth:`Resource.create` would run the ``otel`` detector, which parses
    ``OTEL_RESOURCE_ATTRIBUTES`` itself and logs bad items verbatim; tasktrace parses that
    variable itself. The other detectors run as the SDK runs them: ``service.instance.id``
    (SDKs that have it), and those named by ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS``.
    """
    resource = Resource(
        {
            TELEMETRY_SDK_LANGUAGE: "python",
            TELEMETRY_SDK_NAME: "opentelemetry",
            TELEMETRY_SDK_VERSION: sdk_version,
        }
    )
    names = [
        n.strip()
        for n in os.environ.get(OTEL_EXPERIMENTAL_RESOURCE_DETECTORS, "").split(",")
        if n.strip() and n.strip() != "otel"
    ]
    if ServiceInstanceIdResourceDetector is not None and "service_instance" not in names:
        resource = resource.merge(ServiceInstanceIdResourceDetector().detect())
    if not names:
        return resource
    from importlib.metadata import entry_points  # noqa: PLC0415 - only when detectors are named

    detectors = []
    for ep in entry_points(group="opentelemetry_resource_detector"):
        if ep.name != "otel" and (ep.name in names or "*" in names):
            try:
                detectors.append(ep.load()())
            except Exception as e:  # noqa: BLE001 - a bad detector must not break tasks
                _warn(f"detector:{ep.name}", "tasktrace: resource detector %r failed: %r",
                      ep.name, e)
    return get_aggregated_resources(detectors, initial_resource=resource)


def environment_resource(
    under: Mapping[str, Any], over: Mapping[str, Any], name: str
) -> Resource:
    """Build a resource: detected < ``under`` < ``OTEL_RESOURCE_ATTRIBUTES`` < ``over`` < name.

    Args:
        under: Attributes the environment may override (``host.name`` of this host).
        over: Attributes that override the environment (``configure(resource_attributes=)``).
        name: The ``service.name`` (see :func:`service_name`).

    Returns:
        The resource, with ``telemetry.sdk.*`` (see :func:`_detected_resource`).
    """
    attributes: dict[str, Any] = {**under, **resource_attributes(), **over, SERVICE_NAME: name}
    return _detected_resource().merge(Resource(attributes))


# ----- sampler ----------------------------------------------------------------------------------

_SAMPLERS: Final[dict[str, Callable[[float], sampling.Sampler]]] = {
    "always_on": lambda _: sampling.ALWAYS_ON,
    "always_off": lambda _: sampling.ALWAYS_OFF,
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_always_on": lambda _: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda _: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio,
}


def traces_sampler() -> sampling.Sampler:
    """Return the sampler ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` name.

    An unknown sampler name falls back to ``parentbased_always_on``, and a ratio that is not a
    number between 0 and 1 to 1.0, each with one warning naming the variable and the default.
    """
    raw = _environ(OTEL_TRACES_SAMPLER)
    name = raw.strip().lower() if raw is not None else DEFAULT_SAMPLER
    if name not in _SAMPLERS:
        _warn(
            f"env:{OTEL_TRACES_SAMPLER}",
            "tasktrace: invalid %s=%r (expected one of %s); using %s",
            OTEL_TRACES_SAMPLER,
            raw,
            ", ".join(_SAMPLERS),
            DEFAULT_SAMPLER,
        )
        name = DEFAULT_SAMPLER
    rate = 1.0
    arg = _environ(OTEL_TRACES_SAMPLER_ARG)
    if name.endswith("traceidratio") and arg is not None:
        try:
            rate = float(arg)
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate <= 1.0:  # NaN fails too
            _warn(
                f"env:{OTEL_TRACES_SAMPLER_ARG}",
                "tasktrace: invalid %s=%r (expected a sampling probability from 0 to 1); "
                "using 1.0",
                OTEL_TRACES_SAMPLER_ARG,
                arg,
            )
            rate = 1.0
    return _SAMPLERS[name](rate)


# ----- OTLP exporter settings -------------------------------------------------------------------


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
    """

    signal: Signal
    protocol: str
    endpoint: str
    headers: dict[str, str]
    timeout_s: float


def _protocol(signal: Signal, configured: str | None) -> str:
    if configured is not None:
        return configured
    for name in (_VARIABLES[signal]["protocol"], OTEL_EXPORTER_OTLP_PROTOCOL):
        raw = _environ(name)
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
        raw = _environ(name)
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
        specific = _environ(_VARIABLES[signal]["endpoint"])
        if specific is not None:
            return specific.strip()  # a per-signal URL is used as is
        configured = _environ(OTEL_EXPORTER_OTLP_ENDPOINT) or _DEFAULT_ENDPOINTS[protocol]
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
    return OtlpSettings(
        signal=signal,
        protocol=chosen,
        endpoint=_endpoint(signal, chosen, endpoint),
        headers={**otlp_headers(signal), **{k.lower(): v for k, v in (headers or {}).items()}},
        timeout_s=_timeout_s(signal, timeout_s),
    )
