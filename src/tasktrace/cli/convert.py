"""``tasktrace export`` and ``tasktrace replay``: saved tasks in other formats, or sent again.

Exit status 0, 2 for bad input or a missing extra (one line), 3 when ``replay``'s endpoint
refuses the spans.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
)

from tasktrace.cli.boundary import needs_extra
from tasktrace.cli.inputs import FORCE_HINT, Failure, InputPath, load, read_input
from tasktrace.cli.outputs import Output, OutputPath
from tasktrace.formats.chrome_trace import task_to_chrome_trace
from tasktrace.formats.otlp_json import encode_lines
from tasktrace.formats.replay import ReplayError, load_spans
from tasktrace.formats.replay import replay as send_spans
from tasktrace.tree.file_kinds import CHROME_TRACE, OTLP_LINES, TASK_FILE
from tasktrace.tree.files import check_replaceable, shown

__all__ = ["export", "replay"]


class _Refused(Failure):
    """The endpoint did not accept the replayed spans (exit status 3)."""

    exit_code = 3


@click.command()
@click.argument("file", type=InputPath())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["otlp-json", "chrome", "task"]),
    required=True,
    help="otlp-json: OTLP JSON lines; chrome: trace-event JSON (Perfetto); task: a task file.",
)
@click.option(
    "--output",
    "-o",
    type=OutputPath(),
    required=True,
    help="The file to write (replaced atomically), or - for standard output. An existing file "
    "is replaced only when it is empty or tasktrace output (a task file, OTLP JSON lines, a "
    "tasktrace Chrome trace), never when it is FILE itself, and a task file or OTLP JSON lines "
    "only by the same format.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the output even when it is not tasktrace output, or is FILE itself.",
)
def export(file: Path, fmt: str, output: Output, force: bool) -> None:
    """Convert FILE (a task file, OTLP JSON lines, or a folder of them) to another format.

    Example: tasktrace export run.json --format chrome -o run.trace.json
    (-o - prints it: tasktrace export run.json --format otlp-json -o - | gzip > run.jsonl.gz)
    """
    # before the conversion: a refused output costs no work
    writes = _KINDS[fmt]
    output.check(
        functools.partial(_check_replaceable, force=force, writes=writes),
        inputs=[file],
        force=force,
    )

    if fmt == "otlp-json":
        data = read_input(file, load_spans)
        with needs_extra("export --format otlp-json"):  # the encoder (encode_lines is lazy)
            out = b"".join(encode_lines(data))
    elif fmt == "chrome":
        task = load(file)
        try:
            out = json.dumps(task_to_chrome_trace(task), separators=(",", ":")).encode()
        except ValueError as e:
            raise Failure(f"{file}: {e}") from None
    else:
        out = load(file).model_dump_json().encode() + b"\n"
    output.write(out)


_KINDS = {"otlp-json": OTLP_LINES, "chrome": CHROME_TRACE, "task": TASK_FILE}
"""What each ``--format`` writes: a run's record is replaced only by its own kind."""


def _check_replaceable(path: Path, *, force: bool, writes: str) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {str(path.parent)!r} does not exist")
    check_replaceable(path, force=force, override=FORCE_HINT, writes=writes)


@click.command()
@click.argument("path", type=InputPath())
@click.option(
    "--endpoint",
    "-e",
    help="OTLP endpoint base URL, e.g. http://127.0.0.1:4318 (default: "
    f"{OTEL_EXPORTER_OTLP_TRACES_ENDPOINT} / {OTEL_EXPORTER_OTLP_ENDPOINT}; one is required).",
)
def replay(path: Path, endpoint: str | None) -> None:
    """Send PATH (a task file, OTLP JSON lines or a folder of them) to an OTLP endpoint.

    Trace and span ids, parent links, timestamps, attributes, resource and status are kept;
    task files without ids get ids derived from their task ids (the same on every replay).
    Exit status 3 when the endpoint does not accept the spans.
    """
    spans = read_input(path, load_spans)
    try:
        count = send_spans(spans, endpoint)
    except ValueError as e:  # no endpoint, or not a URL: a usage error (exit 2)
        raise Failure(f"{path}: {e}") from None
    except ReplayError as e:  # a missing extra (gRPC) is no refusal: cli.boundary says it
        raise _Refused(f"{path}: {e}") from None
    click.echo(f"{shown(path)}: sent {count} spans", err=True)
