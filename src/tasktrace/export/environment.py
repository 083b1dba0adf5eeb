"""The standard ``OTEL_*`` variables, parsed and checked by tasktrace and never by the SDK.

Left to themselves, the OpenTelemetry SDK and its exporters read these variables whenever an
argument is not given, and log an item they cannot parse *verbatim*
(``Header format invalid! ... Authorization: Bearer tok-123``), so a token in a mistyped
variable ends up on stderr. tasktrace parses every variable it uses, warns **once per process
per variable** with a line naming the variable and what is used instead (never the value of a
header or resource variable), and hands the SDK the parsed values:

- :func:`otlp_headers`: ``OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)HEADERS``, used by
  :func:`tasktrace.export.otlp.otlp_settings`, the one parsed-environment function behind every OTLP
  exporter tasktrace builds (spans, metrics, replay), with the endpoint, protocol and timeout.
- :func:`resource_attributes` and :func:`service_name`: ``OTEL_RESOURCE_ATTRIBUTES`` and
  ``OTEL_SERVICE_NAME``; :func:`tasktrace.export.resource.environment_resource` builds a resource
  from them without :meth:`Resource.create <opentelemetry.sdk.resources.Resource.create>`
  (which would parse the variable again and log bad items).
- :func:`traces_sampler`: ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``.

Each resolver also says where its value came from (:class:`Resolved`: an argument, a variable's
name, or ``default``), so that ``tasktrace config`` shows the values the exporters and the
provider get, resolved by the same functions (:mod:`tasktrace.export.effective`).

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
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import unquote

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import sampling

from tasktrace.core.warn import WarnOnce

__all__ = [
    "DEFAULT",
    "DEFAULT_SAMPLER",
    "SDK_PARSER_LOGGERS",
    "Resolved",
    "Signal",
    "environ_value",
    "headers_variable",
    "headers_variable_texts",
    "otlp_headers",
    "parse_headers",
    "parse_resource_attributes",
    "resolve_service_name",
    "resolve_traces_sampler",
    "resource_attributes",
    "sdk_parsing_quiet",
    "service_name",
    "traces_sampler",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

Signal = Literal["traces", "metrics"]
"""The OTLP signal an exporter sends: its per-signal variables and its HTTP path."""

T = TypeVar("T")

DEFAULT: Final = "default"
"""The source of a value that nothing set (:attr:`Resolved.source`)."""


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """A setting's effective value and where it came from.

    Attributes:
        value: The value used.
        source: ``configure(NAME=...)`` (an argument given in code), the name of the
            ``OTEL_*`` variable that gave it, or :data:`DEFAULT`.
    """

    value: T
    source: str


DEFAULT_SAMPLER: Final = "parentbased_always_on"
"""``OTEL_TRACES_SAMPLER`` when unset or invalid (the SDK's default)."""
_HEADERS_VARIABLES: Final[dict[Signal, str]] = {
    "traces": OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    "metrics": OTEL_EXPORTER_OTLP_METRICS_HEADERS,
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


def environ_value(name: str) -> str | None:
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


def headers_variable(signal: Signal) -> tuple[str, str | None]:
    """Return (name, value) of the headers variable ``signal`` uses: per-signal, else generic.

    The value is ``None`` (and the name the generic variable's) when neither is set.
    """
    name = _HEADERS_VARIABLES[signal]
    raw = environ_value(name)
    if raw is None:
        name = OTEL_EXPORTER_OTLP_HEADERS
        raw = environ_value(name)
    return name, raw


def otlp_headers(signal: Signal) -> dict[str, str]:
    """Return the parsed headers of ``signal``'s OTLP exporter (per-signal variable first).

    An invalid item is left out with one warning naming the variable and the item's position,
    never its text.
    """
    name, raw = headers_variable(signal)
    if raw is None:
        return {}
    headers, bad, count = parse_headers(raw)
    if bad:
        _warn(
            f"env:{name}",
            "tasktrace: invalid %s: item %s of %d is not a valid header (key=value, the value "
            "percent-encoded, without control characters; values are not shown); tasktrace "
            "leaves %s",
            name,
            ", ".join(map(str, bad)),
            count,
            "that header out" if len(bad) == 1 else "those headers out",
        )
    return headers


def headers_variable_texts(signal: Signal) -> list[str]:
    """Return every item's value of ``signal``'s headers variable, as written and decoded.

    Valid or not: for scrubbing from failure messages. The OTLP/HTTP exporter parses the
    variable itself too, and its liberal parser accepts an item whose decoded value holds a
    control character, which tasktrace leaves out; the HTTP library then refuses the request,
    quoting the value.
    """
    _, raw = headers_variable(signal)
    texts: list[str] = []
    for item in (raw or "").split(","):
        value = item.partition("=")[2] or item
        texts.extend(t for t in {value.strip(), unquote(value.strip())} if t)
    return texts


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
    raw = environ_value(OTEL_RESOURCE_ATTRIBUTES)
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


def resolve_service_name(
    configured: str | None, attributes: Mapping[str, Any], default: str
) -> Resolved[str]:
    """Return ``service.name`` by the precedence the OTel specification gives, and its source.

    Args:
        configured: ``configure(service_name=...)`` (tasktrace's own, above all).
        attributes: Resource attributes given in code (their ``service.name`` comes next).
        default: Used when nothing else names the service.

    Returns:
        The first of: ``configured``; ``service.name`` in ``attributes``; ``OTEL_SERVICE_NAME``;
        ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``; ``default``, with where it came from.
    """
    for candidate, source in (
        (configured, "configure(service_name=...)"),
        (attributes.get(SERVICE_NAME), "configure(resource_attributes=...)"),
        (environ_value(OTEL_SERVICE_NAME), OTEL_SERVICE_NAME),
        (resource_attributes().get(SERVICE_NAME), OTEL_RESOURCE_ATTRIBUTES),
    ):
        if isinstance(candidate, str) and candidate:
            return Resolved(candidate, source)
    return Resolved(default, DEFAULT)


def service_name(configured: str | None, attributes: Mapping[str, Any], default: str) -> str:
    """Return ``service.name``: the value of :func:`resolve_service_name`."""
    return resolve_service_name(configured, attributes, default).value


# ----- sampler ----------------------------------------------------------------------------------

_SAMPLERS: Final[dict[str, Callable[[float], sampling.Sampler]]] = {
    "always_on": lambda _: sampling.ALWAYS_ON,
    "always_off": lambda _: sampling.ALWAYS_OFF,
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_always_on": lambda _: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda _: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio,
}


def resolve_traces_sampler() -> Resolved[sampling.Sampler]:
    """Return the sampler ``OTEL_TRACES_SAMPLER`` / ``_ARG`` name, and where it came from.

    An unknown sampler name falls back to ``parentbased_always_on``, and a ratio that is not a
    number between 0 and 1 to 1.0, each with one warning naming the variable and the default.
    The source names the variables whose values were used (``default`` for neither).
    """
    raw = environ_value(OTEL_TRACES_SAMPLER)
    name = raw.strip().lower() if raw is not None else DEFAULT_SAMPLER
    sources = [OTEL_TRACES_SAMPLER] if raw is not None else []
    if name not in _SAMPLERS:
        _warn(
            f"env:{OTEL_TRACES_SAMPLER}",
            "tasktrace: invalid %s=%r (expected one of %s); using %s",
            OTEL_TRACES_SAMPLER,
            raw,
            ", ".join(_SAMPLERS),
            DEFAULT_SAMPLER,
        )
        name, sources = DEFAULT_SAMPLER, []
    rate = 1.0
    arg = environ_value(OTEL_TRACES_SAMPLER_ARG)
    if name.endswith("traceidratio") and arg is not None:
        try:
            rate = float(arg)
        except ValueError:
            rate = math.nan
        if 0.0 <= rate <= 1.0:  # NaN fails
            sources.append(OTEL_TRACES_SAMPLER_ARG)
        else:
            _warn(
                f"env:{OTEL_TRACES_SAMPLER_ARG}",
                "tasktrace: invalid %s=%r (expected a sampling probability from 0 to 1); using 1.0",
                OTEL_TRACES_SAMPLER_ARG,
                arg,
            )
            rate = 1.0
    return Resolved(_SAMPLERS[name](rate), ", ".join(sources) or DEFAULT)


def traces_sampler() -> sampling.Sampler:
    """Return the sampler the variables name: the value of :func:`resolve_traces_sampler`."""
    return resolve_traces_sampler().value
