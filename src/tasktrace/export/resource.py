"""The resource of tasktrace's spans and metrics, built without ``Resource.create``.

:meth:`Resource.create <opentelemetry.sdk.resources.Resource.create>` runs the SDK's ``otel``
resource detector, which parses ``OTEL_RESOURCE_ATTRIBUTES`` itself (keys not percent-decoded,
an invalid item skipped and logged verbatim, the rest kept). tasktrace parses that variable
itself (:func:`tasktrace.export.environment.resource_attributes`) and builds the resource
here, running
the SDK's other detectors as ``Resource.create`` would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.environment_variables import OTEL_EXPERIMENTAL_RESOURCE_DETECTORS
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
    get_aggregated_resources,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from tasktrace.core.warn import WarnOnce
from tasktrace.export.environment import resource_attributes

try:  # SDK >= 1.37 adds service.instance.id in Resource.create; older ones do not
    from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector
except ImportError:  # pragma: no cover - depends on the installed SDK
    ServiceInstanceIdResourceDetector = None  # type: ignore[assignment,misc]

__all__ = ["environment_resource"]

_warn = WarnOnce(logging.getLogger(__name__))


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
                _warn(
                    f"detector:{ep.name}", "tasktrace: resource detector %r failed: %r", ep.name, e
                )
    return get_aggregated_resources(detectors, initial_resource=resource)


def environment_resource(under: Mapping[str, Any], over: Mapping[str, Any], name: str) -> Resource:
    """Build a resource: detected < ``under`` < ``OTEL_RESOURCE_ATTRIBUTES`` < ``over`` < name.

    Args:
        under: Attributes the environment may override (``host.name`` of this host).
        over: Attributes that override the environment (``configure(resource_attributes=)``).
        name: The ``service.name`` (see :func:`tasktrace.export.environment.service_name`).

    Returns:
        The resource, with ``telemetry.sdk.*`` and what the SDK's detectors other than
        ``otel`` find (``service.instance.id``, ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS``).
    """
    attributes: dict[str, Any] = {**under, **resource_attributes(), **over, SERVICE_NAME: name}
    return _detected_resource().merge(Resource(attributes))
