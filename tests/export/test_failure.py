"""Why an export failed, in one phrase safe to log; endpoints without secrets (export.failure)."""

from __future__ import annotations

from tasktrace.export.failure import (
    GRPC_PORT_HINT,
    MAX_REASON_CHARS,
    NO_ANSWER,
    describe_failure,
    endpoint_secrets,
    is_permanent,
    redact_endpoint,
)


def test_the_reason_is_the_errno_else_the_status_else_the_first_message() -> None:
    """An errno wins; else the last HTTP or gRPC status; else the message without retry chatter."""
    refused = "Transient error ... [Errno 111] Connection refused')), retrying in 0.86s."
    assert describe_failure([refused]) == "[Errno 111] Connection refused"
    assert (
        describe_failure(["Failed to export span batch code: 503, reason: Service Unavailable"])
        == "HTTP 503 Service Unavailable"
    )
    assert describe_failure(["StatusCode.UNAVAILABLE"]) == "gRPC UNAVAILABLE"
    assert describe_failure(["odd failure, retrying in 1.5s."]) == "odd failure"
    assert describe_failure([]) == "the exporter reported failure"


def test_a_request_refused_as_too_large_is_said_so_with_the_request_limit() -> None:
    """HTTP 413 and gRPC RESOURCE_EXHAUSTED "larger than max" name the size tasktrace keeps to."""
    http = describe_failure(["code: 413, reason: Payload Too Large"], 3 * 1024 * 1024)
    assert http.startswith("the collector refused the request as too large: HTTP 413")
    assert "at most 3,145,728 bytes" in http
    grpc = describe_failure(
        ["StatusCode.RESOURCE_EXHAUSTED error details: Received message larger than max"]
    )
    assert grpc.startswith("the collector refused the request as too large: gRPC")


def test_endpoints_are_logged_without_user_password_query_or_fragment() -> None:
    """The redacted endpoint keeps scheme, host and path; the removed parts are listed."""
    endpoint = "https://user:pw123@collector:4318/v1/traces?token=abc#frag"
    assert redact_endpoint(endpoint) == "https://collector:4318/v1/traces"
    assert endpoint_secrets(endpoint) == ["pw123", "token=abc", "frag"]


TLS_MESSAGE = (
    "Transient error HTTPSConnectionPool(host='127.0.0.1', port=14443): Max retries exceeded "
    "with url: /v1/traces (Caused by SSLError(SSLCertVerificationError(1, '[SSL: "
    "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate "
    "(_ssl.c:1006)'))) encountered while exporting spans batch, retrying in 0.83s."
)
"""The OTel HTTP exporter's message for an untrusted certificate (recorded, SDK 1.45)."""


def test_a_long_reason_keeps_its_end_the_innermost_cause() -> None:
    """A TLS failure is named; another long chain keeps its innermost cause, not its prefix.

    Before: the first 160 characters ("...(Caused by SSLError(SSLCertVerificationError(1, '[S").
    """
    assert describe_failure([TLS_MESSAGE]) == (
        "TLS: certificate verify failed: self-signed certificate"
    )
    assert is_permanent(TLS_MESSAGE)
    chain = "Transient error Pool(" + "x" * 300 + ") (Caused by OddError('the real reason'))"
    reason = describe_failure([chain])
    assert reason == "OddError('the real reason')"
    long_tail = describe_failure(["odd: " + "y" * 400 + " the end"])
    assert long_tail.endswith("y the end")
    assert len(long_tail) == MAX_REASON_CHARS
    assert len(reason) <= MAX_REASON_CHARS


def test_a_status_is_said_the_same_whether_retried_or_not() -> None:
    """503 (retried: the SDK logs its phrase only) and 500 both read ``HTTP <code> <phrase>``."""
    retried = "Transient error Service Unavailable encountered while exporting spans batch, "
    assert describe_failure([retried + "retrying in 1.02s."]) == "HTTP 503 Service Unavailable"
    final = "Failed to export spans batch code: 500, reason: Internal Server Error"
    assert describe_failure([final]) == "HTTP 500 Internal Server Error"


def test_messages_that_follow_a_shutdown_are_no_cause() -> None:
    """Only the messages of tasktrace's shutdown at exit: the endpoint never answered.

    "Shutdown in progress", gRPC "CANCELLED: Channel closed!" are what the shutdown causes.
    """
    closed = (
        "Failed to export traces to 127.0.0.1:4317, error code: StatusCode.CANCELLED, "
        "error details: Channel closed!"
    )
    assert describe_failure([closed, "Shutdown in progress, aborting retry."]) == NO_ANSWER


def test_an_http2_answer_names_the_grpc_port_not_its_bytes() -> None:
    """OTLP/HTTP to a gRPC port: the protocol and ports are named, the bytes are not quoted."""
    message = (
        "Transient error ('Connection aborted.', BadStatusLine('\\x00\\x00\\x18\\x04\\x00')) "
        "encountered while exporting spans batch, retrying in 0.84s."
    )
    assert describe_failure([message]) == GRPC_PORT_HINT
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in GRPC_PORT_HINT
    assert is_permanent(message)
    assert not is_permanent("Transient error Service Unavailable encountered while exporting")
