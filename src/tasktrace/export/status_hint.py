"""Say what to check when a trace backend refuses an export request outright (HTTP 4xx).

A 4xx answer is not retried by the OTel exporters and does not go away by itself: the request
reached a server that will not take it as sent. The cause is almost always the set-up: a
missing or wrong header (an API key, MLflow's ``x-mlflow-experiment-id``) or an endpoint path
where nothing receives OTLP traces. :func:`refusal_hint` turns the status in tasktrace's
failure reason into one sentence naming what to check. It names settings, never their values:
the reason it reads holds a status code and a phrase, and the hint is fixed text.
"""

from __future__ import annotations

import os
import re

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
)

__all__ = ["CA_BUNDLE_VARIABLES", "refusal_hint", "tls_hint"]

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
"""Variables by which ``requests`` (the OTLP/HTTP exporters' client) replaces the certificate
it was given (``OTEL_EXPORTER_OTLP_CERTIFICATE``) with another bundle."""

_HTTP_4XX = re.compile(r"(?:HTTP |code: )(4\d\d)\b")
"""A 4xx status in a failure reason: tasktrace's ``HTTP 422 ...`` or the OTel HTTP exporter's
``... batch code: 422, reason: ...``."""

_GRPC = re.compile(r"(?:gRPC |StatusCode\.)(UNAUTHENTICATED|PERMISSION_DENIED|UNIMPLEMENTED)\b")
"""The gRPC statuses that mean the same as HTTP 401, 403 and 404."""

_HEADERS = (
    f"{OTEL_EXPORTER_OTLP_HEADERS}, {OTEL_EXPORTER_OTLP_TRACES_HEADERS} or configure(headers=...)"
)
_PATH = (
    f"OTLP/HTTP receives traces at /v1/traces: {OTEL_EXPORTER_OTLP_ENDPOINT} and "
    f"configure(endpoint=...) get it appended, {OTEL_EXPORTER_OTLP_TRACES_ENDPOINT} is used as "
    "it is"
)

_CREDENTIALS = f"The backend refused the credentials: check the authorization headers ({_HEADERS})"
_NO_RECEIVER = f"Nothing receives traces at this address: check the endpoint path ({_PATH})"
_TOO_LARGE = (
    "The backend refused the request as too large: raise its request size limit, or lower "
    f"{OTEL_BSP_MAX_EXPORT_BATCH_SIZE}"
)
_REFUSED = (
    "The backend refused the request: check the endpoint path and the required headers "
    f"({_HEADERS}; for MLflow x-mlflow-experiment-id=<experiment id>)"
)

_BY_STATUS = {
    "401": _CREDENTIALS,
    "403": _CREDENTIALS,
    "404": _NO_RECEIVER,
    "405": _NO_RECEIVER,
    "413": _TOO_LARGE,
    "UNAUTHENTICATED": _CREDENTIALS,
    "PERMISSION_DENIED": _CREDENTIALS,
    "UNIMPLEMENTED": _NO_RECEIVER,
}


def refusal_hint(reason: str | None) -> str | None:
    """Return what to check for a backend's 4xx answer, or ``None`` for any other failure.

    Args:
        reason: tasktrace's failure reason for an export (``HTTP 422 Unprocessable Entity``,
            ``Failed to export spans batch code: 401, reason: Unauthorized``, ``gRPC
            UNAUTHENTICATED``), or ``None``.

    Returns:
        One sentence without a final full stop: for 401/403 (gRPC ``UNAUTHENTICATED``,
        ``PERMISSION_DENIED``) the authorization headers; for 404/405 (``UNIMPLEMENTED``) the
        endpoint path; for 413 the request size, unless ``reason`` says so already; for any
        other 4xx (400, 422, ...) the endpoint path and the required headers, MLflow's
        experiment header included. The text names variables, never their values.
        ``None`` for 408 and 429 (transient: the exporter retries them) and for failures
        without a 4xx status (connection refused, timeouts, 5xx).

    """
    if not reason:
        return None
    grpc = _GRPC.search(reason)
    if grpc:
        return _BY_STATUS[grpc.group(1)]
    http = _HTTP_4XX.search(reason)
    if not http or http.group(1) in {"408", "429"}:
        return None
    status = http.group(1)
    if status == "413" and "too large" in reason:
        return None
    return _BY_STATUS.get(status, _REFUSED)


def tls_hint(reason: str | None) -> str | None:
    """Return what to check for a TLS failure when a CA bundle variable overrides the CA.

    Args:
        reason: tasktrace's failure reason (``TLS: certificate verify failed: ...``) or ``None``.

    Returns:
        For a TLS reason while ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` is set (read from
        the environment now), one sentence without a final full stop naming them (never their
        values): over OTLP/HTTP they replace ``OTEL_EXPORTER_OTLP_CERTIFICATE``. Else ``None``.
    """
    if not reason or not reason.startswith("TLS:"):
        return None
    found = [name for name in CA_BUNDLE_VARIABLES if os.environ.get(name)]
    if not found:
        return None
    return (
        f"{' and '.join(found)} {'is' if len(found) == 1 else 'are'} set: over OTLP/HTTP, "
        f"requests verifies the collector against that bundle, not "
        f"{OTEL_EXPORTER_OTLP_CERTIFICATE}; unset {'it' if len(found) == 1 else 'them'} for "
        "this program or add the collector's CA to the bundle"
    )
