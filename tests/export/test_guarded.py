"""Guarded span export: never raises, one warning naming the endpoint and why (export.guarded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..export_helpers import EXIT_MARGIN_S, NESTED_WORKLOAD, clean_env, run_script
from ..otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver, closed_loopback_endpoint

EXIT_BOUND_S = 2.0


def _assert_file_complete(path: Path) -> None:
    data = json.loads(path.read_text())
    statuses = [data["status"]] + [t["status"] for t in data["subtasks"]]
    assert statuses == ["finished", "finished", "finished", "finished", "failed"]
    assert all(t["duration"] is not None for t in data["subtasks"])


@pytest.mark.parametrize("backend", ["closed port", "refuse 503", "black hole"])
def test_broken_http_endpoint_exits_within_bound_with_one_warning(
    backend: str, tmp_path: Path
) -> None:
    """A down, refusing or silent OTLP/HTTP endpoint: exit within the bound, one warning."""
    receiver = None
    if backend == "closed port":
        endpoint = closed_loopback_endpoint()
    else:
        receiver = OtlpHttpReceiver(mode="refuse" if backend == "refuse 503" else "black_hole")
        endpoint = receiver.endpoint
    try:
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            TASKTRACE_EXIT_TIMEOUT_S=str(EXIT_BOUND_S),
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    finally:
        if receiver is not None:
            receiver.stop()
    assert run.returncode == 0, run.stderr
    assert run.exit_s is not None
    assert run.exit_s < EXIT_BOUND_S + EXIT_MARGIN_S
    warnings = run.export_warnings()
    assert len(warnings) == 1, run.stderr
    assert f"{endpoint}/v1/traces" in warnings[0]
    assert run.sdk_failure_lines() == []
    _assert_file_complete(tmp_path / "task.json")
    if receiver is not None:
        assert receiver.attempts >= 1


def test_unrepresentable_values_never_break_the_export_batch(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """Ints beyond int64 and nested objects arrive as JSON strings; the whole batch arrives."""
    code = """
    from tasktrace import Task
    with Task("parent", big=2**70, nested={"a": {"b": [1, 2]}}, mixed=[1, "a"]) as t:
        t.later = -(2**64)
        with Task("child", small=3):
            pass
    """
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_receiver.endpoint)
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    spans = {s.name: s for s in otlp_http_receiver.wait_for(2, timeout_s=5.0)}
    attrs = spans["parent"].attributes
    assert attrs["tasktrace.data_json.big"] == str(2**70)
    assert json.loads(attrs["tasktrace.data_json.nested"]) == {"a": {"b": [1, 2]}}
    assert json.loads(attrs["tasktrace.data_json.mixed"]) == [1, "a"]
    assert attrs["tasktrace.data_json.later"] == str(-(2**64))
    assert spans["child"].attributes["tasktrace.data.small"] == 3


FOUR_MIB = 4 * 1024 * 1024


REQUEST_LIMIT = 3 * 1024 * 1024  # tasktrace's documented request size


def _receiver(protocol: str, **limits: int) -> OtlpGrpcReceiver | OtlpHttpReceiver:
    if protocol == "grpc":
        return OtlpGrpcReceiver(max_message_bytes=limits.get("max_bytes"))  # None: gRPC's 4 MiB
    return OtlpHttpReceiver(max_body_bytes=limits.get("max_bytes", FOUR_MIB))


def _env(receiver: OtlpGrpcReceiver | OtlpHttpReceiver, protocol: str, **extra: str) -> dict:
    return clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        TASKTRACE_EXIT_TIMEOUT_S="30",
        **extra,
    )


HUGE_ERROR = """
from tasktrace import Task
with Task("run"):
    for i in range(50):
        with Task(f"t{i}"):
            pass
    try:
        with Task("boom"):
            raise ValueError("x" * 5_000_000)
    except ValueError:
        pass
"""
"""52 tasks; one fails with a 5 MB message, which its span carries three times."""


REFUSED_BATCH = """
from tasktrace import Task
with Task("run"):
    for i in range(51):
        with Task(f"t{i}", text="x" * 40_000):
            pass
"""
"""About 2 MB of spans: one request under tasktrace's 3 MiB, over a 1 MiB collector limit."""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_span_too_large_for_any_request_is_dropped_alone(protocol: str, tmp_path: Path) -> None:
    """The other 51 spans arrive; one warning names the span, its size and the request limit."""
    with _receiver(protocol) as receiver:
        run = run_script(HUGE_ERROR, tmp_path, _env(receiver, protocol))
        spans = receiver.wait_for(51, timeout_s=20)
    assert run.returncode == 0, run.stderr
    assert sorted(s.name for s in spans) == sorted(["run", *(f"t{i}" for i in range(50))])
    (warning,) = run.export_warnings()
    assert "span 'boom' is " in warning
    assert f"over the {REQUEST_LIMIT:,}-byte request limit" in warning
    assert "1 of " in warning
    assert "retrying" not in warning


@pytest.mark.parametrize(
    ("protocol", "status"),
    [("http/protobuf", "HTTP 413"), ("grpc", "gRPC RESOURCE_EXHAUSTED")],
)
def test_a_request_refused_as_too_large_is_reported_as_such(
    protocol: str, status: str, tmp_path: Path
) -> None:
    """A collector limit under 3 MiB: the warning says the request was too large, once.

    It gives the status and tasktrace's request size, and never says "retrying".
    """
    for _ in range(3):
        with _receiver(protocol, max_bytes=1024 * 1024) as receiver:
            env = _env(receiver, protocol, OTEL_EXPORTER_OTLP_TIMEOUT="15")
            run = run_script(REFUSED_BATCH, tmp_path, env)
        assert run.returncode == 0, run.stderr
        (warning,) = run.export_warnings()
        if "refused the request as too large" in warning:
            break
        # gRPC's own race: the server's RESOURCE_EXHAUSTED status and its reset of the stream
        # reach the client in either order, and a reset first reads "Stream removed" (seen in
        # 1 of about 30 full-suite runs, well inside the deadline). Only that may repeat.
        assert protocol == "grpc", warning
        assert "Stream removed" in warning, warning
    assert "refused the request as too large" in warning
    assert status in warning
    assert f"{REQUEST_LIMIT:,} bytes" in warning
    assert "52 of 52 spans dropped" in warning
    assert "retrying" not in warning
    assert run.sdk_failure_lines() == []
