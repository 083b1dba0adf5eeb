"""A backend's 4xx answer: the one export warning says what to check, never a header value."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ..export_helpers import NESTED_WORKLOAD, clean_env, run_script
from ..otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver, closed_loopback_endpoint

EXPERIMENT_ID = "887766554433"
TOKEN = "hint-secret-token-5f3a"
HEADERS = f"x-mlflow-experiment-id={EXPERIMENT_ID},authorization=Bearer%20{TOKEN}"
"""Request headers whose values must never appear in the warning."""

CHECK_HEADERS = "check the endpoint path and the required headers"
CHECK_CREDENTIALS = "check the authorization headers"
CHECK_PATH = "check the endpoint path (OTLP/HTTP receives traces at /v1/traces"


def _warning(tmp_path: Path, **env: str) -> str:
    """Run the nested workload with ``env``; return its one export warning (whole stderr)."""
    run = run_script(
        NESTED_WORKLOAD,
        tmp_path,
        clean_env(OTEL_EXPORTER_OTLP_HEADERS=HEADERS, TASKTRACE_EXIT_TIMEOUT_S="3", **env),
        str(tmp_path / "task.json"),
    )
    assert run.returncode == 0, run.stderr
    assert len(run.export_warnings()) == 1, run.stderr
    assert run.sdk_failure_lines() == []
    assert EXPERIMENT_ID not in run.stderr
    assert TOKEN not in run.stderr
    assert "Bearer" not in run.stderr
    return run.stderr


def test_http_422_warning_names_the_headers_and_path_to_check(tmp_path: Path) -> None:
    """An HTTP 422 (MLflow without its experiment header): check path and headers, no values."""
    with OtlpHttpReceiver(mode="refuse", refuse_status=422) as receiver:
        stderr = _warning(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        assert receiver.attempts == 1  # a 4xx is not retried
    assert f"{receiver.endpoint}/v1/traces failed" in stderr
    assert "422" in stderr
    assert CHECK_HEADERS in stderr
    assert "OTEL_EXPORTER_OTLP_HEADERS" in stderr
    assert "x-mlflow-experiment-id" in stderr


def test_http_401_warning_names_the_authorization_headers(tmp_path: Path) -> None:
    """A receiver refusing the credentials (401): the warning points at the headers."""
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer right-token"}) as receiver:
        stderr = _warning(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert "401" in stderr
    assert CHECK_CREDENTIALS in stderr
    assert "right-token" not in stderr


def test_http_404_warning_names_the_endpoint_path(tmp_path: Path) -> None:
    """A traces endpoint with a wrong path (404): the warning explains where traces go."""
    with OtlpHttpReceiver() as receiver:
        stderr = _warning(
            tmp_path, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.endpoint}/v1/trace"
        )
        assert receiver.attempts >= 1
        assert receiver.spans() == []
    assert "404" in stderr
    assert CHECK_PATH in stderr
    assert CHECK_HEADERS not in stderr


def test_grpc_unauthenticated_warning_names_the_authorization_headers(tmp_path: Path) -> None:
    """An OTLP/gRPC UNAUTHENTICATED answer (the gRPC 401): the warning names the headers."""
    with OtlpGrpcReceiver(mode="refuse", refuse_code=grpc.StatusCode.UNAUTHENTICATED) as receiver:
        stderr = _warning(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        )
    assert "UNAUTHENTICATED" in stderr
    assert CHECK_CREDENTIALS in stderr


@pytest.mark.parametrize("backend", ["closed port", "refuse 503"])
def test_failures_without_a_4xx_answer_get_no_hint(backend: str, tmp_path: Path) -> None:
    """Nothing listening, or a 5xx answer: no advice about headers or paths."""
    if backend == "closed port":
        stderr = _warning(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint())
    else:
        with OtlpHttpReceiver(mode="refuse", refuse_status=503) as receiver:
            stderr = _warning(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert "check the" not in stderr
