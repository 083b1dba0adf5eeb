"""Load saved traces (task files or OTLP JSON lines), convert them, and replay them over OTLP.

A *task file* is one task tree as JSON (tasktrace's or LensKit's). An *OTLP JSON-lines file* is
what :class:`~tasktrace.formats.otlp_json.OtlpJsonFileSpanExporter` (or any OTel file exporter)
writes. :func:`load_spans` and :func:`load_task` read either kind, telling them apart by the
first line (``{"resourceSpans": ...`` is OTLP JSON), or a *folder* of OTLP JSON-lines files
(:func:`read_span_folder`): each process of a run writes a file of its own there, so the
folder holds the whole run's spans.

Replaying sends the spans with the OTel project's OTLP exporter (HTTP/protobuf, or gRPC when
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc``), unchanged: original trace and span ids, parent
links, start/end timestamps, attributes, resource, scope and status. The standard
``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout, certificates) apply unless an
endpoint is given; tasktrace parses them as for a live run (:mod:`tasktrace.export.otlp`), and
splits the spans into requests of at most
:data:`~tasktrace.export.request_size.MAX_REQUEST_BYTES`.

Thread-safety: the functions share no state; one exporter is created per :func:`replay` call.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from pydantic import ValidationError

from tasktrace.core.spans import host_attributes
from tasktrace.export import environment
from tasktrace.export.exporters import new_otlp_exporter
from tasktrace.export.failure import redact_endpoint, short_reason
from tasktrace.export.guarded import GuardedSpanExporter, clear_refused, export_refused
from tasktrace.export.otlp import otlp_settings
from tasktrace.export.request_size import MAX_REQUEST_BYTES
from tasktrace.export.resource import environment_resource
from tasktrace.export.status_hint import refusal_hint
from tasktrace.formats.convert import spans_to_task, task_to_spans
from tasktrace.formats.otlp_json import read_spans
from tasktrace.task import Task

__all__ = [
    "ReplayError",
    "is_otlp_json",
    "load_spans",
    "load_task",
    "parse_task_file",
    "read_span_folder",
    "replay",
    "task_resource",
]

REPLAY_BATCH_SPANS: Final = 512
"""Spans per OTLP export request when replaying."""


class ReplayError(RuntimeError):
    """The OTLP exporter reported a failed export (the message names the endpoint)."""


def is_otlp_json(data: bytes) -> bool:
    """Whether ``data`` (a file's contents) is OTLP JSON lines rather than a task file.

    Its first line parses to an object with ``resourceSpans``, or, where that line is not
    complete JSON, it opens as every OTLP JSON writer opens a line (``{"resourceSpans"``): a
    process killed while writing its first request leaves such a file, which
    :func:`~tasktrace.formats.otlp_json.read_spans` then reads with its one warning for a cut
    last line, rather than taking it for a broken task file.
    """
    first = data.lstrip().split(b"\n", 1)[0]
    try:
        parsed = json.loads(first)
    except ValueError:
        return first[:32].replace(b" ", b"").startswith(b'{"resourceSpans"')
    return isinstance(parsed, dict) and "resourceSpans" in parsed


def read_span_folder(path: Path) -> list[ReadableSpan]:
    """Read every OTLP JSON-lines file directly in the folder ``path`` as one set of spans.

    Each process of a run exports to a file of its own in the ``otlp_json_dir`` folder (a
    forked or spawned child, a pool worker, a subprocess), and a Collector's file exporter may
    rotate its file: the run's tree needs them all. Files are read in name order; files that
    are not OTLP JSON lines (a task file, a note), empty files (a process that exported
    nothing) and hidden files are skipped; sub-folders are not entered.

    Raises:
        OSError: The folder or one of its files cannot be read.
        tasktrace.formats.otlp_json.OtlpJsonFormatError: A bad line (names the file and line).
        ValueError: No OTLP JSON-lines file in the folder (the message names it).
    """
    spans: list[ReadableSpan] = []
    found = False
    for file in sorted(path.iterdir()):
        if file.name.startswith(".") or not file.is_file():
            continue
        data = file.read_bytes()
        if _opens_as_otlp_json(data):
            spans.extend(read_spans(data.splitlines(), str(file)))
            found = True
    if not found:
        raise ValueError(f"{path}: a folder with no OTLP JSON-lines file in it")
    return spans


def _opens_as_otlp_json(data: bytes) -> bool:
    """Whether a file in a span folder is OTLP JSON lines (:func:`is_otlp_json`), the key first.

    The key is looked for first: a substring search, where :func:`is_otlp_json` parses the first
    line, i.e. all of a one-line task file (see rows).
    """
    return b"resourceSpans" in data and is_otlp_json(data)


def task_resource(task: Task) -> Resource:
    """Build the resource of spans made from a task file.

    ``host.name`` and ``tasktrace.machine`` are the root task's (each span's resource has its
    own task's: :func:`~tasktrace.formats.convert.task_to_spans`), over
    ``OTEL_RESOURCE_ATTRIBUTES`` (parsed by tasktrace); ``service.name`` is
    ``OTEL_SERVICE_NAME``, else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else
    ``"tasktrace"``; the SDK's ``telemetry.sdk.*`` attributes are added.
    """
    name = environment.service_name(None, {}, "tasktrace")
    return environment_resource({}, host_attributes(task.hostname, task.machine), name)


def parse_task_file(data: bytes) -> Task:
    """Validate a task file's contents (every reader of task files parses them here).

    Trees nested beyond the JSON parser's depth limit (about 100 levels) are parsed by
    :mod:`json` and validated from Python objects instead.

    Raises:
        pydantic.ValidationError: Not a task file, or a bad value in one (see
            :func:`tasktrace.formats.input_errors.describe_input_error` for the words).
        RecursionError: The tree is nested too deeply for :mod:`json`.
    """
    try:
        return Task.model_validate_json(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] != "json_invalid" or "recursion" not in first["msg"]:
            raise
    return Task.model_validate(json.loads(data))


def load_task(path: Path, data: bytes | None = None) -> Task:
    """Load a task tree from a task file, an OTLP JSON-lines file or a folder of them.

    Args:
        path: The file, or a folder of OTLP JSON-lines files (:func:`read_span_folder`; the
            tree's synthetic root, where the spans have more than one root, is named after it).
        data: Its contents, if already read.

    Raises:
        OSError: The file cannot be read.
        pydantic.ValidationError: A task file that is not valid.
        tasktrace.formats.otlp_json.OtlpJsonFormatError: A bad OTLP JSON line (names the line).
        ValueError: An OTLP JSON file without spans; a folder without OTLP JSON-lines files.
    """
    if data is None and path.is_dir():
        return spans_to_task(read_span_folder(path), root_label=path.name)
    data = path.read_bytes() if data is None else data
    if is_otlp_json(data):
        return spans_to_task(read_spans(data.splitlines(), str(path)), root_label=path.name)
    return parse_task_file(data)


def load_spans(path: Path, data: bytes | None = None) -> list[ReadableSpan]:
    """Load spans from an OTLP JSON-lines file or a folder of them, or from a task file's tree.

    Raises:
        The errors of :func:`load_task`.
    """
    if data is None and path.is_dir():
        return read_span_folder(path)
    data = path.read_bytes() if data is None else data
    if is_otlp_json(data):
        return read_spans(data.splitlines(), str(path))
    task = parse_task_file(data)
    return task_to_spans(task, task_resource(task))


def otlp_exporter(endpoint: str | None = None) -> GuardedSpanExporter:
    """Create the OTel OTLP span exporter for the configured protocol, guarded and splitting.

    Args:
        endpoint: Base URL of the collector (``http://host:4318``; ``/v1/traces`` is added for
            HTTP unless present), or ``None`` to use the ``OTEL_EXPORTER_OTLP_*`` variables.

    Returns:
        A :class:`~tasktrace.export.guarded.GuardedSpanExporter` that sends requests of at most
        :data:`~tasktrace.export.request_size.MAX_REQUEST_BYTES` and does not warn (a failed replay
        is the command's error).

    Raises:
        ImportError: gRPC was asked for but ``tasktrace[grpc]`` is not installed.
    """
    settings = otlp_settings("traces", endpoint=endpoint)
    return _ReplayExporter(
        new_otlp_exporter(settings),
        settings.endpoint,
        max_request_bytes=MAX_REQUEST_BYTES,
        secrets=settings.secrets,
    )


class _ReplayExporter(GuardedSpanExporter):
    """The guarded exporter, silent: a failed replay is the command's error, not a warning."""

    def report(self, what: str, lost: int = 0) -> None:
        """Say nothing: :func:`replay` raises with the reason instead."""
        del what, lost


def _endpoint(endpoint: str | None) -> str:
    """Return the endpoint to send to, checked; ``ValueError`` names what is wrong."""
    if endpoint is None:
        endpoint = os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or os.environ.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        if not endpoint:
            raise ValueError(
                "no OTLP endpoint: pass --endpoint URL (e.g. http://127.0.0.1:4318) or set "
                f"{OTEL_EXPORTER_OTLP_ENDPOINT}"
            )
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError as e:
        raise ValueError(f"invalid OTLP endpoint {redact_endpoint(endpoint)!r}: {e}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            f"invalid OTLP endpoint {redact_endpoint(endpoint)!r}: expected http(s)://host:port"
        )
    del port
    return endpoint


def _export_failing_fast(exp: SpanExporter, batch: Sequence[ReadableSpan]) -> SpanExportResult:
    """Export ``batch``; stop the exporter's retries as soon as a connection is refused.

    The OTel exporters retry a refused connection for up to their timeout (about 7 s here);
    with nothing listening, that only delays the error.
    """
    results: list[SpanExportResult] = []
    clear_refused()
    worker = threading.Thread(
        target=lambda: results.append(exp.export(batch)), name="tasktrace-replay", daemon=True
    )
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
        if export_refused() and worker.is_alive():
            exp.shutdown()  # the exporter abandons its retries and returns FAILURE
            worker.join(5.0)
            break
    return results[0] if results else SpanExportResult.FAILURE


def replay(
    spans: Sequence[ReadableSpan],
    endpoint: str | None = None,
    exporter: SpanExporter | None = None,
) -> int:
    """Send ``spans`` unchanged in batches of :data:`REPLAY_BATCH_SPANS`; return the count.

    With tasktrace's own exporter, each batch goes in requests of at most
    :data:`~tasktrace.export.request_size.MAX_REQUEST_BYTES`; a span that alone is larger is not
    sent, and the others still are.

    Args:
        spans: Spans from :func:`load_spans`.
        endpoint: See :func:`otlp_exporter`; ``None``: ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``.
            Ignored when ``exporter`` is given.
        exporter: Export with this exporter instead (it is not shut down).

    Raises:
        ValueError: No endpoint is configured, or it is not an ``http(s)://host:port`` URL.
        ReplayError: An export failed (after the exporter's own retries), or a span was too
            large to send; the message gives the reason and how many spans were sent.
    """
    own = exporter is None
    if exporter is None:
        checked = _endpoint(endpoint)
        exp: SpanExporter = otlp_exporter(checked if endpoint else None)
        where = exp.where if isinstance(exp, GuardedSpanExporter) else checked
    else:
        where = type(exporter).__name__
        exp = exporter
    try:
        for i in range(0, len(spans), REPLAY_BATCH_SPANS):
            batch = spans[i : i + REPLAY_BATCH_SPANS]
            result = _export_failing_fast(exp, batch) if own else exp.export(batch)
            if result is not SpanExportResult.SUCCESS:
                reason = getattr(exp, "last_error", None) or short_reason(None)
                sent = exp.exported_spans if isinstance(exp, GuardedSpanExporter) else i
                hint = refusal_hint(reason)  # a 4xx: what to check, as a live run's warning
                raise ReplayError(
                    f"export to {redact_endpoint(where)} failed ({reason}); "
                    f"{sent} of {len(spans)} spans were sent" + (f". {hint}" if hint else "")
                )
    finally:
        if own:
            exp.shutdown()
    return len(spans)
