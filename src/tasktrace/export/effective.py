"""The one table of settings: tasktrace's own and the export ones, each value with its source.

tasktrace has two kinds of settings, layered one on the other: its own
(:class:`tasktrace.core.settings.Settings`: LensKit's files and variables, ``tasktrace.toml``,
``TASKTRACE_*``) and the export ones (:func:`tasktrace.configure` arguments over the standard
``OTEL_*`` variables over the defaults, :class:`~tasktrace.export.config.ExportConfig`).
:func:`effective_values` lists both as one table of dotted keys (``prometheus.url``,
``export.traces.endpoint``), each with its effective value and source; ``tasktrace config``
prints it.

The export values are resolved by the functions that build the exporters and the provider
(:func:`~tasktrace.export.otlp.otlp_settings`,
:func:`~tasktrace.export.exporters.span_exporter_names`,
:func:`~tasktrace.export.environment.resolve_service_name`, ...), never by a copy of their
rules, so the table shows what a task started with the same configuration would use (when
tasktrace creates the tracer provider: a provider installed by other code reads the ``OTEL_*``
variables itself).

Nothing secret is shown (:data:`~tasktrace.core.redact.REDACTED` in its place): a URL's password
and query values, a value under a secret-looking key (``token``...), every header value and
every resource attribute value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk.environment_variables import OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace.export import SpanExporter

from tasktrace.core.redact import REDACTED, mask_url, mask_value
from tasktrace.core.settings import Settings, get_settings
from tasktrace.core.settings_layers import leaf_paths
from tasktrace.export.config import (
    ExportConfig,
    check_environment,
    current_config,
    resolve_exit_timeout_s,
    sdk_disabled,
)
from tasktrace.export.environment import (
    DEFAULT,
    Resolved,
    Signal,
    environ_value,
    resolve_service_name,
    resolve_traces_sampler,
    resource_attributes,
)
from tasktrace.export.exporters import metric_exporter_names, span_exporter_names
from tasktrace.export.otlp import otlp_settings

__all__ = [
    "EXPORT_KEYS",
    "SCRIPT_NAME_SOURCE",
    "EffectiveValue",
    "effective_values",
    "export_values",
    "settings_values",
]

EXPORT_KEYS: Final = (
    "export.traces.exporters",
    "export.traces.endpoint",
    "export.traces.protocol",
    "export.traces.headers.NAME",
    "export.traces.timeout_s",
    "export.traces.sampler",
    "export.metrics.exporters",
    "export.metrics.endpoint",
    "export.metrics.protocol",
    "export.metrics.headers.NAME",
    "export.metrics.timeout_s",
    "export.service_name",
    "export.resource_attributes.KEY",
    "export.sdk_disabled",
)
"""The keys of :func:`export_values`, ``NAME`` a header's name and ``KEY`` an attribute's."""

SCRIPT_NAME_SOURCE: Final = "default: the script's file name"
"""Source of ``export.service_name`` when nothing names the service (the value is ``None``)."""


@dataclass(frozen=True)
class EffectiveValue:
    """One row of the table: a key, its effective value and where that came from.

    Attributes:
        key: Dotted key path: a settings key (``prometheus.url``) or an export key
            (:data:`EXPORT_KEYS`, ``export.traces.headers.authorization``).
        value: Its JSON value (``None``: unset), secrets masked (see the module docstring).
        source: A file (``lenskit.local.toml``), a variable's name (``LK_MACHINE``,
            ``OTEL_EXPORTER_OTLP_ENDPOINT``), an argument in code (``configure(endpoint=...)``,
            ``lenskit.config.configure()``) or ``default``.
    """

    key: str
    value: Any
    source: str

    def as_dict(self) -> dict[str, Any]:
        """Return ``{"key", "value", "source"}`` (the ``--json`` form of a row)."""
        return {"key": self.key, "value": self.value, "source": self.source}


def _value_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def settings_values(settings: Settings) -> list[EffectiveValue]:
    """Return one row per key of ``settings``, secrets masked, sources from its origins.

    Args:
        settings: As :func:`~tasktrace.core.settings.load_settings` built them
            (:attr:`~tasktrace.core.settings.Settings.origins`; a key not there is ``default``).
    """
    data = settings.model_dump(mode="json")
    return [
        EffectiveValue(
            ".".join(path),
            mask_value(_value_at(data, path), path[-1]),
            settings.origins.get(path, DEFAULT),
        )
        for path in leaf_paths(data)
    ]


def _row(key: str, resolved: Resolved[Any]) -> EffectiveValue:
    return EffectiveValue(key, resolved.value, resolved.source)


def _otlp_values(signal: Signal, config: ExportConfig) -> list[EffectiveValue]:
    if signal == "traces":  # configure()'s arguments are the traces exporter's
        otlp = otlp_settings(
            signal,
            endpoint=config.endpoint,
            protocol=config.protocol,
            headers=config.headers,
            timeout_s=config.timeout_s,
        )
    else:
        otlp = otlp_settings(signal)
    prefix = f"export.{signal}"
    headers = [
        EffectiveValue(f"{prefix}.headers.{name}", REDACTED, otlp.sources[f"headers.{name}"])
        for name in sorted(otlp.headers)
    ]
    return [
        EffectiveValue(f"{prefix}.endpoint", mask_url(otlp.endpoint), otlp.sources["endpoint"]),
        EffectiveValue(f"{prefix}.protocol", otlp.protocol, otlp.sources["protocol"]),
        *headers,
        EffectiveValue(f"{prefix}.timeout_s", otlp.timeout_s, otlp.sources["timeout_s"]),
    ]


def export_values(config: ExportConfig | None = None) -> list[EffectiveValue]:
    """Return the export rows (:data:`EXPORT_KEYS`), resolved as the exporters resolve them.

    Args:
        config: What :func:`tasktrace.configure` was given (default: the current one; in a
            process that never called it, the environment and the defaults alone).

    Returns:
        The exporters, OTLP endpoint, protocol, headers (values masked) and timeout of spans
        and of task metrics, the sampler (its SDK description), ``service.name``
        (``None`` with :data:`SCRIPT_NAME_SOURCE` when it would be the script's file name),
        the other resource attributes given by ``OTEL_RESOURCE_ATTRIBUTES`` and ``configure``
        (values masked) and whether ``OTEL_SDK_DISABLED`` turns export off. An invalid
        ``OTEL_*`` variable is warned about once, as when the exporters are built.
    """
    config = config or current_config()
    check_environment()
    exporters = span_exporter_names(config)
    names = [type(e).__name__ if isinstance(e, SpanExporter) else e for e in exporters.value]
    service = resolve_service_name(config.service_name, config.resource_attributes, "")
    attributes = {
        **{key: OTEL_RESOURCE_ATTRIBUTES for key in resource_attributes()},
        **{key: "configure(resource_attributes=...)" for key in config.resource_attributes},
    }
    attributes.pop(SERVICE_NAME, None)  # export.service_name shows it
    sampler = resolve_traces_sampler()
    return [
        EffectiveValue("export.traces.exporters", names, exporters.source),
        *_otlp_values("traces", config),
        EffectiveValue("export.traces.sampler", sampler.value.get_description(), sampler.source),
        _row("export.metrics.exporters", metric_exporter_names()),
        *_otlp_values("metrics", config),
        EffectiveValue(
            "export.service_name",
            service.value if service.source != DEFAULT else None,
            service.source if service.source != DEFAULT else SCRIPT_NAME_SOURCE,
        ),
        *(
            EffectiveValue(f"export.resource_attributes.{key}", REDACTED, source)
            for key, source in sorted(attributes.items())
        ),
        EffectiveValue(
            "export.sdk_disabled",
            sdk_disabled(),
            OTEL_SDK_DISABLED if environ_value(OTEL_SDK_DISABLED) is not None else DEFAULT,
        ),
    ]


def effective_values(config: ExportConfig | None = None) -> list[EffectiveValue]:
    """Return the one table: every settings key, then the export keys, each with its source.

    Args:
        config: What :func:`tasktrace.configure` was given (default: the current one).

    Returns:
        :func:`settings_values` of the process's settings
        (:func:`~tasktrace.core.settings.get_settings`, which the exporters read too), with
        ``exit_timeout_s`` as the exit uses it (``configure(exit_timeout_s=...)`` wins), then
        :func:`export_values`.
    """
    config = config or current_config()
    rows = settings_values(get_settings())
    exit_timeout = _row("exit_timeout_s", resolve_exit_timeout_s(config))
    rows = [exit_timeout if row.key == exit_timeout.key else row for row in rows]
    return rows + export_values(config)
