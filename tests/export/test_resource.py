"""The resource of tasktrace's spans, built without Resource.create (export.resource)."""

from __future__ import annotations

import pytest

from tasktrace.export.resource import environment_resource


def test_sources_win_in_order_detected_under_environment_over_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Detected < ``under`` < OTEL_RESOURCE_ATTRIBUTES < ``over`` < the service name."""
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "host.name=from-env,team=env,service.name=env-svc"
    )
    resource = environment_resource(
        {"host.name": "under-host", "process.pid": 1},
        {"team": "over"},
        "the-service",
    )
    attrs = resource.attributes
    assert attrs["telemetry.sdk.language"] == "python"
    assert attrs["host.name"] == "from-env"  # the environment may override what is under it
    assert attrs["process.pid"] == 1
    assert attrs["team"] == "over"
    assert attrs["service.name"] == "the-service"
