"""Invalid standard OTEL_* values: one tasktrace warning naming the variable, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_WORKLOAD = "from tasktrace import Task\nwith Task('x'):\n    pass\nprint('ran')\n"


@pytest.mark.parametrize(
    ("name", "value", "secret_safe"),
    [
        ("OTEL_SDK_DISABLED", "perhaps", False),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", False),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-3", False),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization-s3cret", True),
        ("OTEL_RESOURCE_ATTRIBUTES", "garbage", False),
    ],
)
def test_invalid_otel_value_warns_naming_the_variable(
    name: str, value: str, secret_safe: bool
) -> None:
    """The task runs; exactly one tasktrace line names the variable (headers never echoed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    env[name] = value
    proc = subprocess.run(
        [sys.executable, "-c", _WORKLOAD], env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )
    assert proc.stdout.strip() == "ran"
    ours = [line for line in proc.stderr.splitlines() if line.startswith("tasktrace:")]
    assert len(ours) == 1, proc.stderr
    assert f"invalid {name}" in ours[0]
    if secret_safe:
        assert value not in proc.stderr
