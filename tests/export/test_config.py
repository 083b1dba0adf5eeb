"""tasktrace.configure: arguments over the OTEL_* variables over the defaults (export.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasktrace import configure

from ..export_helpers import (
    EXIT_MARGIN_S,
    clean_env,
    run_script,
)
from ..otlp_receivers import OtlpHttpReceiver, closed_loopback_endpoint


def test_configure_arguments_override_the_environment(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """configure(endpoint=, service_name=, headers=) wins over the OTEL_* variables."""
    code = f"""
    import tasktrace
    tasktrace.configure(
        endpoint={otlp_http_receiver.endpoint!r},
        service_name="from-code",
        headers={{"authorization": "Bearer secret-token"}},
        resource_attributes={{"team": "ml"}},
    )
    with tasktrace.Task("configured"):
        pass
    """
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint(),
        OTEL_SERVICE_NAME="from-env",
    )
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=5.0)
    assert span.name == "configured"
    assert span.resource_attributes["service.name"] == "from-code"
    assert span.resource_attributes["team"] == "ml"
    assert otlp_http_receiver.request_headers()[0]["authorization"] == "Bearer secret-token"
    assert "secret-token" not in run.stderr + run.stdout


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "udp"},
        {"timeout_s": -1.0},
        {"exit_timeout_s": -0.5},
        # No wait can take these (before: accepted, then every export failed with "timestamp
        # out of range for platform time_t", and the exit's flush died with a traceback).
        {"timeout_s": float("inf")},
        {"timeout_s": float("nan")},
        {"timeout_s": 1e300},
        {"exit_timeout_s": float("inf")},
        {"exit_timeout_s": float("nan")},
    ],
)
def test_configure_rejects_invalid_arguments(kwargs: dict[str, object]) -> None:
    """configure() raises ValueError naming a bad protocol or a timeout no wait can take."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        configure(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("exporters", ["otlp", [123], [None]])
def test_configure_rejects_exporters_that_are_neither_names_nor_exporters(
    exporters: object,
) -> None:
    """configure(exporters="otlp") raises TypeError naming the argument.

    Before: a string was taken letter by letter (warnings about exporters 'o', 't', 'l', 'p'),
    and 123 or None was "an unknown OTEL_TRACES_EXPORTER name", once the first task started.
    """
    with pytest.raises(TypeError, match="exporters"):
        configure(exporters=exporters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint": 4318},
        {"service_name": 5},
        {"protocol": 1},
        {"headers": "authorization=Bearer S3CRET-hdr"},
        {"headers": {"authorization": 5}},
        {"resource_attributes": [("team", "ml")]},
        {"timeout_s": "10"},
        {"exit_timeout_s": True},
    ],
)
def test_configure_rejects_arguments_of_the_wrong_type(kwargs: dict[str, object]) -> None:
    """A wrong type is a TypeError at the call naming the argument, never showing a header.

    Before: endpoint=4318 became "cannot create the 'otlp' span exporter ('int' object has no
    attribute 'strip')" at the first task; headers="..." a ValueError about "dictionary update
    sequence element #0"; service_name=5 and header values that are not strings were accepted.
    """
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=name) as raised:
        configure(**kwargs)  # type: ignore[arg-type]
    assert "S3CRET" not in str(raised.value)


def test_an_unknown_exporter_name_in_code_is_reported_as_the_arguments(tmp_path: Path) -> None:
    """configure(exporters=["nope"]) names the argument, not OTEL_TRACES_EXPORTER.

    Before: "unknown OTEL_TRACES_EXPORTER name 'nope'", a variable the program never set.
    """
    code = """
        import tasktrace
        tasktrace.configure(exporters=["nope"])
        with tasktrace.Task("t"):
            pass
    """
    run = run_script(code, tmp_path, clean_env())
    assert run.returncode == 0, run.stderr
    (line,) = [x for x in run.stderr.splitlines() if "nope" in x]
    assert "configure(exporters=...)" in line
    assert "OTEL_TRACES_EXPORTER" not in line


def test_an_endpoint_without_a_scheme_is_named_and_its_password_never_shown(
    tmp_path: Path,
) -> None:
    """configure(endpoint="user:pw@host:port"): a warning saying what is wrong, no password.

    Before: no word until the export failed, and its warning quoted the OTel exporter's
    "No connection adapters were found for 'bob:S3CRET-pw-77@127.0.0.1:9/v1/traces'",
    password included (the endpoint's secrets were found only in a URL with a scheme).
    """
    code = """
        import tasktrace
        tasktrace.configure(endpoint="bob:S3CRET-pw-77@127.0.0.1:9")
        with tasktrace.Task("t"):
            pass
    """
    run = run_script(code, tmp_path, clean_env())
    assert run.returncode == 0, run.stderr
    assert "S3CRET" not in run.stderr + run.stdout
    assert "configure(endpoint=...)" in run.stderr
    assert "is not an http:// or https:// URL" in run.stderr


def test_an_endpoint_without_a_scheme_is_one_warning_quoting_what_was_set(
    tmp_path: Path,
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=127.0.0.1:PORT (spans and metrics): one warning, the value.

    Before: two warnings, the first quoting '127.0.0.1:PORT/v1/traces' (a value the user never
    set), then the span export's failure ("No connection adapters were found for ...").
    """
    endpoint = closed_loopback_endpoint().removeprefix("http://")
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_METRICS_EXPORTER="otlp")
    run = run_script("from tasktrace import Task\nwith Task('t'):\n    pass\n", tmp_path, env)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} is not an http:// or https://" in lines[0]


EXIT_BOUND_S = 2.0


def test_configure_exit_timeout_overrides_the_variable(tmp_path: Path) -> None:
    """configure(exit_timeout_s=0.5) beats TASKTRACE_EXIT_TIMEOUT_S=30 against a black hole."""
    with OtlpHttpReceiver(mode="black_hole") as receiver:
        code = f"""
        import time, tasktrace
        tasktrace.configure(endpoint={receiver.endpoint!r}, exit_timeout_s=0.5)
        with tasktrace.Task("x"):
            pass
        print("end", time.time(), flush=True)
        """
        env = clean_env(TASKTRACE_EXIT_TIMEOUT_S="30")
        run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert run.exit_s is not None
    assert run.exit_s < 0.5 + EXIT_MARGIN_S
    assert len(run.export_warnings()) == 1, run.stderr
    assert "1 of 1 spans not exported" in run.export_warnings()[0]
