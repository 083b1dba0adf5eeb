"""Why an export failed, in one phrase safe to log; endpoints without secrets (export.failure)."""

from __future__ import annotations

from tasktrace.export.failure import describe_failure, endpoint_secrets, redact_endpoint


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
