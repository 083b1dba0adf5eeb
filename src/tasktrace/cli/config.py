"""``tasktrace config``: the merged settings, each value with its source, secrets masked.

Settings are read as a task would read them in the working folder (see
:mod:`tasktrace.core.settings_sources`): every key of the settings table, its value and where it
came from (a file, ``[tasktrace]`` table and all; a variable's name; ``default``). The
OpenTelemetry variables set in the environment follow, by name, and, where the settings
mention Prometheus but leave it nothing to query, what is missing (the warning a task gives).

Nothing secret is printed: a password or query in a URL, a value under a secret-looking key
(``token``, ``password``...), every header value of the ``OTEL_EXPORTER_OTLP_*HEADERS``
variables and every value of ``OTEL_RESOURCE_ATTRIBUTES`` are shown as ``***``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_CERTIFICATE,
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
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasktrace.core.redact import REDACTED, is_secret_name, mask_url
from tasktrace.core.settings import Settings, load_settings
from tasktrace.core.settings_layers import leaf_paths
from tasktrace.core.settings_sources import project_folder
from tasktrace.meters.prometheus_setup import prometheus_setup_problem

__all__ = ["OTEL_VARIABLES", "config", "otel_rows", "register", "settings_rows"]

OTEL_VARIABLES = (
    OTEL_TRACES_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
    OTEL_SDK_DISABLED,
)
"""The OpenTelemetry variables tasktrace reads, shown by ``tasktrace config`` when set."""

_KEY_VALUE_LISTS = frozenset(
    {
        OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        OTEL_EXPORTER_OTLP_METRICS_HEADERS,
        OTEL_RESOURCE_ATTRIBUTES,
    }
)


def _masked(path: tuple[str, ...], value: Any) -> Any:
    if isinstance(value, list):
        return [_masked(path, item) for item in value]
    if not isinstance(value, str):
        return value
    if is_secret_name(path[-1]):
        return REDACTED
    return mask_url(value) if "://" in value or "@" in value else value


def _value_at(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def settings_rows(settings: Settings) -> list[dict[str, Any]]:
    """Return one row per key of ``settings``: ``{"key", "value", "source"}``, secrets masked.

    ``key`` is the dotted key path (``prometheus.url``), ``value`` its JSON value after
    validation, ``source`` a file (``lenskit.local.toml``), a variable (``LK_MACHINE``),
    ``lenskit.config.configure()`` or ``default`` (from :attr:`Settings.origins`).
    """
    data = settings.model_dump(mode="json")
    return [
        {
            "key": ".".join(path),
            "value": _masked(path, _value_at(data, path)),
            "source": settings.origins.get(path, "default"),
        }
        for path in leaf_paths(data)
    ]


def otel_rows() -> list[dict[str, str]]:
    """Return ``{"variable", "value"}`` for each of :data:`OTEL_VARIABLES` that is set.

    Header and resource-attribute lists show their keys with every value as ``***``; URLs
    lose their password and query values.
    """
    rows = []
    for name in OTEL_VARIABLES:
        raw = os.environ.get(name)
        if raw is None or not raw.strip():
            continue
        if name in _KEY_VALUE_LISTS:
            keys = [item.partition("=")[0].strip() for item in raw.split(",") if item.strip()]
            value = ",".join(f"{key}={REDACTED}" for key in keys)
        else:
            value = mask_url(raw.strip())
        rows.append({"variable": name, "value": value})
    return rows


def _prometheus_meter_on(settings: Settings) -> bool:
    return settings.meters is None or "prometheus" in settings.meters


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables.")
def config(as_json: bool) -> None:
    """Print the merged settings with the source of each value (secrets masked).

    Reads what a task started here would read: lenskit.toml, lenskit.local.toml and
    tasktrace.toml in the project folder (LK_PROJECT_ROOT, else the working folder), the LK_*
    and TASKTRACE_* variables; then lists the OpenTelemetry variables that are set.
    """
    folder = str(project_folder().resolve())
    settings = load_settings()
    rows = settings_rows(settings)
    problem = prometheus_setup_problem(settings) if _prometheus_meter_on(settings) else None
    otel = otel_rows()
    if as_json:
        report = {
            "project_folder": folder,
            "settings": rows,
            "prometheus_problem": problem,
            "opentelemetry": otel,
        }
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    console.print(f"project folder: {escape(folder)}")
    table = Table(title="tasktrace settings")
    for column in ("key", "value", "source"):  # fold, never cut: every character is shown
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(escape(row["key"]), escape(_text(row["value"])), escape(row["source"]))
    console.print(table)
    if otel:
        variables = Table(title="OpenTelemetry variables")
        for column in ("variable", "value"):
            variables.add_column(column, overflow="fold")
        for item in otel:
            variables.add_row(item["variable"], escape(item["value"]))
        console.print(variables)
    if problem is not None:
        console.print(f"[bold]no energy from Prometheus[/bold]: {escape(problem)}")


def register(group: click.Group) -> None:
    """Add ``config`` to ``group``."""
    group.add_command(config)
