"""``tasktrace.configure(...)``: export settings in code, over the standard ``OTEL_*`` variables.

This table is layered on tasktrace's own settings (:mod:`tasktrace.core.settings`: the
``TASKTRACE_*`` variables over the TOML file over the defaults). Precedence, highest first: an
argument to :func:`configure`; the standard ``OTEL_*`` variable (the OpenTelemetry names, taken
from :mod:`opentelemetry.sdk.environment_variables`); for the settings tasktrace has itself
(``exit_timeout_s``, ``otlp_json_dir``), :func:`~tasktrace.core.settings.get_settings`; the
default. tasktrace parses the endpoint, protocol, headers and timeout variables itself (the
per-signal ``OTEL_EXPORTER_OTLP_TRACES_*`` forms first; see :mod:`tasktrace.export.otlp`) and
hands the OTLP exporter the parsed values, so that a malformed variable is reported once,
without its value; the exporters still read ``OTEL_EXPORTER_OTLP_CERTIFICATE`` and the other
TLS and compression variables themselves.

Exporters are built only when something asks for them; with nothing configured, none is built
and no connection is ever attempted.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.sdk.environment_variables import (
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.trace.export import SpanExporter

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import get_settings
from tasktrace.core.units import MAX_SECONDS, valid_seconds
from tasktrace.export import environment
from tasktrace.export.environment import DEFAULT, Resolved
from tasktrace.export.otlp import PROTOCOLS, otlp_settings

__all__ = [
    "ExportConfig",
    "check_environment",
    "configure",
    "current_config",
    "on_configure",
    "resolve_exit_timeout_s",
    "sdk_disabled",
]

_log = logging.getLogger(__name__)

Protocol = Literal["http/protobuf", "grpc"]
_PROTOCOLS: tuple[str, ...] = PROTOCOLS


@dataclass
class ExportConfig:
    """What :func:`configure` was given (``None``: fall back to the environment, then default).

    See :func:`configure` for the meaning of each field.
    """

    service_name: str | None = None
    exporters: Sequence[str | SpanExporter] | None = None
    endpoint: str | None = None
    protocol: Protocol | None = None
    headers: Mapping[str, str] | None = None
    timeout_s: float | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    exit_timeout_s: float | None = None

    @property
    def asked_for_export(self) -> bool:
        """Whether code explicitly asked for exporters (added even to a foreign provider)."""
        return self.exporters is not None or self.endpoint is not None


_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_lock")
_config = ExportConfig()
_listeners: list[Callable[[], None]] = []


def on_configure(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after every :func:`configure` (the tracer provider reconfigures)."""
    _listeners.append(listener)


def current_config() -> ExportConfig:
    """Return the configuration of the last :func:`configure` call (defaults before any)."""
    return _config


def configure(
    *,
    service_name: str | None = None,
    exporters: Sequence[str | SpanExporter] | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    exit_timeout_s: float | None = None,
) -> None:
    """Configure where tasktrace sends its spans; every argument overrides its variable.

    Call it before the first task, or again at any time: tasks started afterwards use the new
    settings (the previous exporters are flushed and shut down within ``exit_timeout_s``).

    Args:
        service_name: ``service.name`` of the resource, above every other source (then
            ``service.name`` in ``resource_attributes``, ``OTEL_SERVICE_NAME``, ``service.name``
            in ``OTEL_RESOURCE_ATTRIBUTES``, the script's name). Only used when tasktrace
            creates the tracer provider.
        exporters: Exporter names (``"otlp"``, ``"console"``, ``"none"``, or an
            ``opentelemetry_traces_exporter`` entry-point name) or SDK ``SpanExporter``
            instances (else ``OTEL_TRACES_EXPORTER``; else ``["otlp"]`` when an endpoint is
            set; else none).
        endpoint: OTLP endpoint URL, e.g. ``http://127.0.0.1:4318`` (else
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``). For
            OTLP/HTTP a base URL gets ``/v1/traces`` appended (unless it ends so already), as
            the variable does.
        protocol: ``"http/protobuf"`` or ``"grpc"`` (else ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
            / ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``). gRPC needs
            ``pip install 'tasktrace[grpc]'``.
        headers: Request headers / gRPC metadata, e.g. an ``authorization`` token, added over
            those of ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS``
            (same name: the argument wins). Never logged or written to spans.
        timeout_s: Timeout of each export request including retries, in seconds (else
            ``OTEL_EXPORTER_OTLP_TIMEOUT``, else 10).
        resource_attributes: Extra resource attributes, over ``OTEL_RESOURCE_ATTRIBUTES``.
        exit_timeout_s: Seconds the interpreter's exit may wait for the last spans to be
            exported (else ``TASKTRACE_EXIT_TIMEOUT_S``, else 5).

    Exporters given here (``exporters`` or ``endpoint``) are added even when another tracer
    provider (yours, Logfire's, ``opentelemetry-instrument``'s) is installed; exporters from the
    environment alone are added only to a provider tasktrace creates, since the other set-up
    reads the same variables.

    Raises:
        ValueError: ``protocol`` is not one of the two above, or a timeout is negative, not
            finite or over :data:`~tasktrace.core.units.MAX_SECONDS` (no wait can take it).
        TypeError: An argument of the wrong type (named; a header's value is never shown):
            ``exporters`` a string (give a list: ``["otlp"]``) or holding something that is
            neither a name nor a ``SpanExporter``, a text argument that is not a string,
            ``headers`` or ``resource_attributes`` not a mapping (a header not text), a
            timeout not a number.

    Thread-safety: may be called from any thread; tasks running meanwhile finish with the
    settings they started with.

    """
    global _config  # noqa: PLW0603 - one configuration per process
    _check_types(
        {"service_name": service_name, "endpoint": endpoint, "protocol": protocol},
        {"headers": headers, "resource_attributes": resource_attributes},
        {"timeout_s": timeout_s, "exit_timeout_s": exit_timeout_s},
    )
    if protocol is not None and protocol not in _PROTOCOLS:
        raise ValueError(f"protocol must be one of {_PROTOCOLS}, not {protocol!r}")
    if isinstance(exporters, str):
        raise TypeError(f"exporters must be a list of names, not the string {exporters!r}")
    for item in exporters or ():
        if not isinstance(item, str | SpanExporter):
            raise TypeError(f"exporters: {item!r} is neither an exporter name nor a SpanExporter")
    for name, value in (("timeout_s", timeout_s), ("exit_timeout_s", exit_timeout_s)):
        if value is not None and not valid_seconds(value):
            raise ValueError(f"{name} must be from 0 to {MAX_SECONDS:g} seconds, not {value!r}")
    with _lock:
        _config = ExportConfig(
            service_name=service_name,
            exporters=list(exporters) if exporters is not None else None,
            endpoint=endpoint,
            protocol=protocol,
            headers=dict(headers) if headers is not None else None,
            timeout_s=timeout_s,
            resource_attributes=dict(resource_attributes or {}),
            exit_timeout_s=exit_timeout_s,
        )
        for listener in _listeners:
            listener()


def _check_types(
    texts: Mapping[str, object], mappings: Mapping[str, object], seconds: Mapping[str, object]
) -> None:
    """Raise TypeError naming a ``configure`` argument of the wrong type (no value of a header)."""
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    for name, value in mappings.items():
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{name} must be a mapping of names to values, not {type(value).__name__}"
            )
        if name == "headers":  # values are sent as they are: text only (never shown: secrets)
            for key, item in value.items():
                if not isinstance(key, str) or not isinstance(item, str):
                    raise TypeError(f"headers: the name and value of {key!r} must be strings")
    for name, value in seconds.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")


_checked_environment = False


def check_environment() -> None:
    """Warn once per process about invalid standard ``OTEL_*`` values, naming each variable.

    Parses every variable a tasktrace-owned provider and its span exporter use
    (:mod:`tasktrace.export.environment` warns about each invalid one once, saying what is used
    instead); values are never echoed for the header and resource variables, which may hold
    secrets.
    """
    global _checked_environment  # noqa: PLW0603 - once per process
    if _checked_environment:
        return
    _checked_environment = True
    raw = os.environ.get(OTEL_SDK_DISABLED)
    if raw is not None and raw.strip().lower() not in {"true", "false", ""}:
        _log.warning(
            "tasktrace: invalid %s=%r (expected true or false); using false", OTEL_SDK_DISABLED, raw
        )
    otlp_settings("traces")  # protocol, timeout, headers
    environment.resource_attributes()
    environment.traces_sampler()


def resolve_exit_timeout_s(config: ExportConfig | None = None) -> Resolved[float]:
    """Return the seconds the exit may wait for exports, and where that came from.

    ``configure(exit_timeout_s=...)`` (``config``, default the current one), else the
    ``exit_timeout_s`` setting (its source from :attr:`~tasktrace.core.settings.Settings.origins`:
    ``TASKTRACE_EXIT_TIMEOUT_S``, a file), else the default, 5.
    """
    configured = (config or current_config()).exit_timeout_s
    if configured is not None:
        return Resolved(configured, "configure(exit_timeout_s=...)")
    settings = get_settings()
    return Resolved(settings.exit_timeout_s, settings.origins.get(("exit_timeout_s",), DEFAULT))


def sdk_disabled() -> bool:
    """Whether ``OTEL_SDK_DISABLED`` is ``true`` (case-insensitive), as the SDK reads it."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
