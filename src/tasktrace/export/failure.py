"""Say why an OTLP export failed, in one short phrase safe to log; endpoints without credentials.

The OTel exporters log every attempt with whole exception chains and retry chatter
("Transient error ... retrying in 0.86s"), and a final "Failed to export ..." line. tasktrace
collects those messages while it exports (:mod:`tasktrace.export.guarded`) and reduces them here to
the reason its one warning gives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL

__all__ = [
    "GRPC_PORT_HINT",
    "MAX_REASON_CHARS",
    "NO_ANSWER",
    "describe_failure",
    "endpoint_secrets",
    "is_permanent",
    "redact_endpoint",
    "short_reason",
]

_ERRNO = re.compile(r"\[Errno -?\d+\] [^\"')(]+")
_HTTP_STATUS = re.compile(r"code: (\d{3}), reason: ([^\n]*)")
_TRANSIENT_PHRASE = re.compile(r"Transient error (.+?) encountered while exporting")
_GRPC_STATUS = re.compile(r"StatusCode\.([A-Z_]+)")
_GRPC_DETAILS = re.compile(r"[Ee]rror details: ([^\n]*)")
_RETRY_PHRASE = re.compile(r",? *retrying in [0-9.]+ ?s\.?")
_TLS = re.compile(
    r"\[SSL: [A-Z_]+\] ([^'\"()]+)|(CERTIFICATE_VERIFY_FAILED|[Ss]sl handshake failed)"
)
_HTTP2_PREFACE = re.compile(r"BadStatusLine\(.?'\\x00\\x00")
"""An HTTP/1.1 client reading an HTTP/2 server's first frame: a gRPC port."""
_NO_ANSWER = ("Read timed out", "DEADLINE_EXCEEDED", "timed out")
_AFTERMATH = (
    "Shutdown in progress",
    "due to timeout, max retries or shutdown",
    "Channel closed",
    "already shutdown",
    "Exporter already shut",
)
"""Messages that follow a failure (or tasktrace's shutdown of the exporter at exit), never
its cause."""
_HTTP_PHRASES = {status.phrase: status.value for status in HTTPStatus}
MAX_REASON_CHARS = 160
"""The longest reason kept from a message tasktrace does not recognize (its end is kept)."""

NO_ANSWER = "no answer"
"""The reason when the endpoint never answered (before the exporter's timeout or the exit)."""

GRPC_PORT_HINT = (
    "the endpoint answered in HTTP/2 (an OTLP/gRPC port?): OTLP/HTTP is usually port 4318 "
    f"and OTLP/gRPC 4317; for gRPC set {OTEL_EXPORTER_OTLP_PROTOCOL}=grpc"
)
"""The reason for an HTTP/2 answer to an OTLP/HTTP request."""


def short_reason(message: str | None) -> str:
    """Return the gist of one failure message (see :func:`describe_failure`)."""
    return describe_failure([message] if message else [])


def is_permanent(message: str) -> bool:
    """Whether ``message`` (an OTel exporter's) reports a failure retrying cannot mend.

    ``True`` for a TLS certificate verification failure and for an HTTP/2 answer to an
    OTLP/HTTP request (a gRPC port): the OTel exporters retry both as connection errors until
    their timeout, though the next attempt meets the same certificate or server.
    """
    return bool(_TLS.search(message) or _HTTP2_PREFACE.search(message))


def describe_failure(messages: Sequence[str], max_request_bytes: int | None = None) -> str:
    """Say why an export failed, from the OTel exporter's messages during it (oldest first).

    The OTel exporters' messages embed whole exception chains and retry chatter. Messages
    that only follow a failure (``Shutdown in progress``, ``Failed to export ... due to
    timeout, max retries or shutdown``, gRPC ``CANCELLED: Channel closed!`` after tasktrace
    shut the exporter down at exit) are skipped; none left: :data:`NO_ANSWER`. In order of
    preference: a TLS failure (``TLS: certificate verify failed: self-signed certificate``);
    an HTTP/2 answer to OTLP/HTTP (:data:`GRPC_PORT_HINT`); an errno (``[Errno 111]
    Connection refused``); a timeout (:data:`NO_ANSWER`); the last HTTP status, with its
    code whether the exporter retried it or not (``HTTP 503 Service Unavailable``), or gRPC
    status with its details; else the first message without its "retrying in ..." part and
    the exporter's wording, its end kept when longer than :data:`MAX_REASON_CHARS`. A request
    refused as too large (HTTP 413, gRPC ``RESOURCE_EXHAUSTED`` "larger than max") is said in
    so many words, with the request size tasktrace keeps to (``max_request_bytes``) when
    there is one.
    """
    if not messages:
        return "the exporter reported failure"
    causes = [m for m in messages if not any(mark in m for mark in _AFTERMATH)]
    if not causes:
        return NO_ANSWER
    named = _connection_failure(causes)
    if named:
        return named
    for message in reversed(causes):
        status = _status(message, max_request_bytes)
        if status:
            return status
    if any(mark in m for m in causes for mark in _NO_ANSWER):
        return f"{NO_ANSWER} (timed out)"
    first = _RETRY_PHRASE.sub("", causes[0])
    transient = _TRANSIENT_PHRASE.search(first)
    return _keep_end((transient.group(1) if transient else first).strip())


def _connection_failure(causes: Sequence[str]) -> str | None:
    """Return the TLS failure, gRPC-port answer or errno in ``causes``; ``None``: none."""
    for message in causes:
        tls = _TLS.search(message)
        if tls:
            return _keep_end(f"TLS: {(tls.group(1) or tls.group(2)).strip()}")
        if _HTTP2_PREFACE.search(message):
            return GRPC_PORT_HINT
    for message in causes:
        errno = _ERRNO.search(message)
        if errno:
            return errno.group(0).strip()
    return None


def _status(message: str, max_request_bytes: int | None) -> str | None:
    """Return the HTTP or gRPC status in ``message``, in tasktrace's words; ``None``: none."""
    http = _HTTP_STATUS.search(message)
    transient = _TRANSIENT_PHRASE.search(message)
    if not http and transient and transient.group(1).strip() in _HTTP_PHRASES:
        phrase = transient.group(1).strip()  # a retried status: the SDK logs its phrase only
        return f"HTTP {_HTTP_PHRASES[phrase]} {phrase}"
    if http and http.group(1) != "None":
        text = f"HTTP {http.group(1)} {http.group(2).strip()}".strip()[:MAX_REASON_CHARS]
        return _too_large(text, max_request_bytes) if http.group(1) == "413" else text
    grpc = _GRPC_STATUS.search(message)
    if grpc:
        details = _GRPC_DETAILS.search(message)
        detail = _keep_end(details.group(1).strip()) if details else ""
        if "Connection refused" in detail:  # "failed to connect to all addresses; ...: ..."
            detail = "Connection refused"
        text = f"gRPC {grpc.group(1)}" + (f": {detail}" if detail else "")
        too_large = grpc.group(1) == "RESOURCE_EXHAUSTED" and "larger than max" in detail
        return _too_large(text, max_request_bytes) if too_large else text
    return None


def _keep_end(text: str) -> str:
    """Return ``text``, or its last :data:`MAX_REASON_CHARS` characters after an ellipsis.

    The innermost cause of an exception chain is at its end: requests' wrapper is dropped.
    """
    if "(Caused by " in text:  # requests' "HTTPConnectionPool(...): ... (Caused by X(...))"
        text = text.rsplit("(Caused by ", 1)[1]
        text = text.removesuffix(")")  # the parenthesis "(Caused by" opened
    if len(text) <= MAX_REASON_CHARS:
        return text
    return "…" + text[-(MAX_REASON_CHARS - 1) :]


def _too_large(status: str, max_request_bytes: int | None) -> str:
    limit = (
        f"; requests are at most {max_request_bytes:,} bytes, so the collector's limit is lower"
        if max_request_bytes
        else ""
    )
    return f"the collector refused the request as too large: {status}{limit}"


def redact_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` without user name, password, query or fragment (safe to log)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return "<invalid endpoint>"
    if not parts.scheme or not parts.netloc:
        return endpoint.split("?", 1)[0].rsplit("@", 1)[-1]
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def endpoint_secrets(endpoint: str) -> list[str]:
    """Return the parts of ``endpoint`` that :func:`redact_endpoint` removes: password, query."""
    try:
        parts = urlsplit(endpoint)
        password = parts.password
    except ValueError:
        return [endpoint]
    if not parts.scheme or not parts.netloc:  # "user:pw@host:4318?k=v": no URL to parse
        head, _, query = endpoint.partition("?")
        user_info = head.rsplit("@", 1)[0] if "@" in head else ""
        return [text for text in (user_info, *user_info.split(":")[1:], query) if text]
    return [text for text in (password, parts.query, parts.fragment) if text]
