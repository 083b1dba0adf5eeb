"""The export set-up of this process, written as environment variables for engine workers.

An engine worker (a loky process, a Ray worker, a Dask worker) is started by the engine, not
by the user's script, so :func:`tasktrace.configure` called in the driver does not reach it.
:func:`worker_environment` writes the driver's effective set-up as the standard variables; a
worker applies them to its ``os.environ`` and calls ``configure()`` (:func:`apply_environment`),
so its spans leave through the same exporters, under the same ``service.name``, in the same
trace as the driver's.

Secrets (headers) travel only as the value of ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` in the
engine's channel to its workers; they are never written to task records, span attributes or
logs.

Thread-safety: :func:`worker_environment` may be called from any thread;
:func:`apply_environment` changes ``os.environ`` and the process's export configuration.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
from typing import Final

from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
)

from tasktrace.core.warn import WarnOnce
from tasktrace.export.config import configure, current_config
from tasktrace.export.otlp import otlp_settings
from tasktrace.export.provider import build_resource
from tasktrace.tree.spool import SPOOL_ENV

__all__ = [
    "ENVIRONMENT_PREFIXES",
    "PROCESS_BOUND",
    "apply_environment",
    "worker_environment",
]

_warn = WarnOnce(logging.getLogger(__name__))

ENVIRONMENT_PREFIXES: Final = ("OTEL_", "TASKTRACE_")
"""Variables of this process's environment that a worker gets (:func:`worker_environment`)."""
PROCESS_BOUND: Final = ("TRACEPARENT", "TRACESTATE", "TASKTRACE_PARENT_TASK_ID", SPOOL_ENV)
"""Variables naming this process's own parent (``tasktrace.task.processes``): never passed on."""


def worker_environment() -> dict[str, str]:
    """Return this process's effective export set-up as environment variables for workers.

    The ``OTEL_*`` and ``TASKTRACE_*`` variables of this process (less :data:`PROCESS_BOUND`),
    overlaid with the :func:`tasktrace.configure` arguments, resolved as this process's own
    exporter resolves them (:func:`~tasktrace.export.otlp.otlp_settings`) and written as the
    per-signal ``OTEL_EXPORTER_OTLP_TRACES_*`` variables (which win over the general ones, as
    ``configure`` wins over the environment); ``OTEL_SERVICE_NAME`` is this process's service
    name, so that the whole run shows as one service. Exporter *instances* given to
    ``configure`` cannot travel: workers get only the named exporters (one warning).

    Returns:
        Variable name → value (``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` in seconds, as tasktrace
        reads it); hand it to :func:`apply_environment` in the worker.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(ENVIRONMENT_PREFIXES)}
    for name in PROCESS_BOUND:
        env.pop(name, None)
    config = current_config()
    env[OTEL_SERVICE_NAME] = str(build_resource(config).attributes.get("service.name"))
    if config.endpoint is not None or config.protocol is not None or config.headers is not None:
        settings = otlp_settings(
            "traces",
            endpoint=config.endpoint,
            protocol=config.protocol,
            headers=config.headers,
            timeout_s=config.timeout_s,
        )
        env[OTEL_EXPORTER_OTLP_TRACES_PROTOCOL] = settings.protocol
        env[OTEL_EXPORTER_OTLP_TRACES_ENDPOINT] = settings.endpoint
        env[OTEL_EXPORTER_OTLP_TRACES_HEADERS] = _kv_list(settings.headers)
    if config.timeout_s is not None:
        env[OTEL_EXPORTER_OTLP_TRACES_TIMEOUT] = repr(config.timeout_s)
    if config.exit_timeout_s is not None:
        env["TASKTRACE_EXIT_TIMEOUT_S"] = repr(config.exit_timeout_s)
    if config.resource_attributes:
        extra = _kv_list({k: str(v) for k, v in config.resource_attributes.items()})
        old = env.get(OTEL_RESOURCE_ATTRIBUTES)
        env[OTEL_RESOURCE_ATTRIBUTES] = f"{old},{extra}" if old else extra
    if config.exporters is not None:
        names = [e for e in config.exporters if isinstance(e, str)]
        if len(names) < len(config.exporters):
            _warn(
                "worker-exporters",
                "tasktrace: exporter objects given to configure() cannot be sent to engine "
                "workers; workers use only the named exporters %s",
                names,
            )
        env[OTEL_TRACES_EXPORTER] = ",".join(names) or "none"
    elif config.endpoint is not None:
        env[OTEL_TRACES_EXPORTER] = "otlp"
    return env


def apply_environment(environment: Mapping[str, str]) -> bool:
    """In a worker: set ``environment`` (from :func:`worker_environment`) and reconfigure.

    Nothing happens when every variable already has its value (a worker set up before).

    Returns:
        Whether anything changed (then :func:`tasktrace.configure` was called with no
        arguments: later tasks use the exporters the variables now name).
    """
    if not environment or all(os.environ.get(k) == v for k, v in environment.items()):
        return False
    os.environ.update(environment)
    configure()
    return True


def _kv_list(items: Mapping[str, str]) -> str:
    quote = urllib.parse.quote
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items.items())
