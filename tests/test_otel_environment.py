"""Standard OTEL_* variables: parsed by tasktrace, one warning naming a bad one, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task

from .otlp_receivers import OtlpHttpReceiver

_WORKLOAD = "from tasktrace import Task\nwith Task('x'):\n    pass\nprint('ran')\n"


def _run(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.parametrize(
    ("name", "value", "extra", "default", "secret_safe"),
    [
        ("OTEL_SDK_DISABLED", "perhaps", {}, "using false", False),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", {}, "(10 s) applies", False),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-3", {}, "(10 s) applies", False),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon", {}, "(10 s) applies", False),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "smoke", {}, "using http/protobuf", False),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization-s3cret", {}, "leaves that header out", True),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "authorization: s3cret",
            {},
            "leaves that header out",
            True,
        ),
        ("OTEL_RESOURCE_ATTRIBUTES", "garbage-s3cret", {}, "whole variable is ignored", True),
        ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz-s3cret", {}, "whole variable is ignored", True),
        ("OTEL_TRACES_SAMPLER", "sometimes", {}, "using parentbased_always_on", False),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "half",
            {"OTEL_TRACES_SAMPLER": "traceidratio"},
            "using 1.0",
            False,
        ),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "2",
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},
            "using 1.0",
            False,
        ),
    ],
)
def test_invalid_otel_value_warns_naming_the_variable(
    name: str, value: str, extra: dict[str, str], default: str, secret_safe: bool
) -> None:
    """The task runs; one line, from tasktrace, names the variable and the default used.

    No other line comes from the SDK's own parsing (header and resource values never shown).
    Pydantic plugins are off: Logfire's (a dev dependency) reads OTEL_TRACES_SAMPLER_ARG at
    import and raises on "half", and imports the SDK's log module, whose import runs
    Resource.create (tested in test_security.py::test_sdk_resource_parser_elsewhere_shows_no_item).
    """
    proc = _run(_WORKLOAD, {name: value, **extra, "PYDANTIC_DISABLE_PLUGINS": "__all__"})
    assert proc.stdout.strip() == "ran"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tasktrace:")
    assert f"invalid {name}" in lines[0]
    assert default in lines[0]
    if secret_safe:
        assert "s3cret" not in proc.stderr


_SAMPLED = """
import sys
from tasktrace import Task
with Task("root", file=sys.argv[1]):
    for i in range(20):
        with Task(f"t{i}"):
            pass
print("ran")
"""


@pytest.mark.parametrize(
    ("sampler", "arg", "expected"),
    [("always_off", None, 0), ("traceidratio", "0", 0), ("parentbased_always_on", None, 21)],
)
def test_traces_sampler_from_the_environment_is_used(
    sampler: str, arg: str | None, expected: int, tmp_path: Path
) -> None:
    """OTEL_TRACES_SAMPLER(_ARG), parsed by tasktrace, decide which spans are exported."""
    env = {"OTEL_TRACES_SAMPLER": sampler}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg
    with OtlpHttpReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        proc = _run(_SAMPLED, env, str(tmp_path / "run.json"))
        assert proc.stderr == ""
        spans = receiver.wait_for(expected, timeout_s=10) if expected else receiver.spans()
    assert len(spans) == expected  # the process has exited: every export is done
    root = Task.model_validate_json((tmp_path / "run.json").read_text())
    assert len(root.subtasks) == 20  # the task file never depends on sampling


_RESOURCE = """
import tasktrace
from tasktrace import Task
{configure}
with Task("x"):
    pass
"""


@pytest.mark.parametrize(
    ("env", "configure", "expected"),
    [
        ({}, "", "script.py"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=exp-a"}, "", "exp-a"),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=exp-a", "OTEL_SERVICE_NAME": "svc-b"},
            "",
            "svc-b",
        ),
        (
            {"OTEL_SERVICE_NAME": "svc-b"},
            "tasktrace.configure(resource_attributes={'service.name': 'attr-c'})",
            "attr-c",
        ),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=exp-a", "OTEL_SERVICE_NAME": "svc-b"},
            "tasktrace.configure(service_name='code-d', "
            "resource_attributes={'service.name': 'attr-c'})",
            "code-d",
        ),
    ],
)
def test_service_name_follows_the_specified_precedence(
    env: dict[str, str], configure: str, expected: str, tmp_path: Path
) -> None:
    """service.name: configure(service_name=) > its resource_attributes > OTEL_SERVICE_NAME.

    Then service.name in OTEL_RESOURCE_ATTRIBUTES, then the script's name.
    """
    script = tmp_path / "script.py"
    script.write_text(_RESOURCE.format(configure=configure))
    with OtlpHttpReceiver() as receiver:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
        full.update(env, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        if configure:
            full["OTEL_TRACES_EXPORTER"] = "otlp"
        subprocess.run(
            [sys.executable, str(script)],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (span,) = receiver.wait_for(1, timeout_s=10)
    assert span.resource_attributes["service.name"] == expected


def test_resource_attributes_are_percent_decoded(otlp_http_receiver: OtlpHttpReceiver) -> None:
    """Keys and values of OTEL_RESOURCE_ATTRIBUTES are percent-decoded (',' and '=' too)."""
    proc = _run(
        _WORKLOAD,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_receiver.endpoint,
            "OTEL_RESOURCE_ATTRIBUTES": "team=ml%2Cnlp, note = a%3Db%20c ,caf%C3%A9=cr%C3%A8me",
        },
    )
    assert proc.stderr == ""
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=10)
    resource = span.resource_attributes
    assert (resource["team"], resource["note"], resource["café"]) == ("ml,nlp", "a=b c", "crème")
