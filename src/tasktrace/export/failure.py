"""Say why an OTLP export failed, in one short phrase safe to log; endpoints without credentials.

The OTel exporters log every attempt with whole exception chains and retry chatter
("Transient error ... retrying in 0.86s"), and a final "Failed to export ..." line. tasktrace
collects those messages while it exports (:mod:`tasktrace.export.guarded`) and reduces them here to
the reason its one warning gives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["describe_failure", "endpoint_secrets", "redact_endpoint", "short_reason"]

_ERRNO = re.compile(r"\[Errno -?\d+\] [^\"')(]+")
_HTTP_STATUS = re.compile(r"code: (\d{3}), reason: ([^\n]*)")
_GRPC_STATUS = re.compile(r"StatusCode\.([A-Z_]+)")
_GRPC_DETAILS = re.compile(r"[Ee]rror details: ([^\n]*)")
_RETRY_PHRASE = re.compile(r",? *retrying in [0-9.]+ ?s\.?")


def short_reason(message: str | None) -> str:
    """Return the gist of one failure message (see :func:`describe_failure`)."""
    return describe_failure([message] if message else [])


def describe_failure(messages: Sequence[str], max_request_bytes: int | None = None) -> str:
    """Say why an export failed, from the OTel exporter's messages during it (oldest first).

    The OTel exporters' messages embed whole exception chains and retry chatter. In order of
    preference: an errno (``[Errno 111] Connection refused``); the last HTTP status
    (``HTTP 503 Service Unavailable``) or gRPC status with its details; else the first message
    without its "retrying in ..." part, cut to 160 characters. A request refused as too large
    (HTTP 413, gRPC ``RESOURCE_EXHAUSTED`` "larger than max") is said in so many words, with
    the request size tasktrace keeps to (``max_request_bytes``) when there is one.
    """
    if not messages:
        return "the exporter reported failure"
    for message in messages:
        errno = _ERRNO.search(message)
        if errno:
            return errno.group(0).strip()
    for message in reversed(messages):
        http = _HTTP_STATUS.search(message)
        if http:
            text = f"HTTP {http.group(1)} {http.group(2).strip()}".strip()[:160]
            return _too_large(text, max_request_bytes) if http.group(1) == "413" else text
        grpc = _GRPC_STATUS.search(message)
        if grpc:
            details = _GRPC_DETAILS.search(message)
            detail = details.group(1).strip()[:160] if details else ""
            text = f"gRPC {grpc.group(1)}" + (f": {detail}" if detail else "")
            too_large = grpc.group(1) == "RESOURCE_EXHAUSTED" and "larger than max" in detail
            return _too_large(text, max_request_bytes) if too_large else text
    first = next((m for m in messages if not m.startswith("Shutdown in progress")), messages[0])
    return _RETRY_PHRASE.sub("", first).strip()[:160]


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
