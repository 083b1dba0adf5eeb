"""Per-task overhead: tasktrace Task enter+exit vs a bare OpenTelemetry SDK span, side by side.

Every case runs against the same SDK TracerProvider (BatchSpanProcessor + null exporter, or an
OTLP/HTTP exporter to a loopback receiver for the export case); the cases alternate round by
round so that machine noise hits them alike, and the median per-iteration cost is reported
with its ratio to the bare span measured in the same process.

    python -m benchmarks.overhead            # print the table
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks._common import Row, alternate, run_json


class NullExporter(SpanExporter):
    """Drops every span (measures the SDK's own cost, not an exporter's)."""

    def export(self, spans: Sequence[object]) -> SpanExportResult:
        """Accept and drop the batch."""
        del spans
        return SpanExportResult.SUCCESS


def _measure(n: int, rounds: int, endpoint: str | None) -> dict[str, float]:
    provider = TracerProvider()
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    else:
        exporter = NullExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 17))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("benchmark")

    from tasktrace import Task  # after the provider: tasktrace adds its processor to it

    folder = Path(tempfile.mkdtemp())

    def bare(k: int) -> None:
        for _ in range(k):
            with tracer.start_as_current_span("bare"):
                pass

    def task(k: int) -> None:
        for _ in range(k):
            with Task("task"):
                pass

    from opentelemetry import context as otel_context
    from opentelemetry.trace import Status, StatusCode

    key = otel_context.create_key("floor")

    def floor(k: int) -> None:  # what any task must do in the SDK, and nothing else
        for _ in range(k):
            span = tracer.start_span("floor", attributes={"tasktrace.task.id": "x"})
            token = otel_context.attach(
                otel_context.set_value(key, 1, trace.set_span_in_context(span))
            )
            span.set_attributes(
                {"a.duration_s": 1.0, "a.cpu_time_s": 0.5, "a.peak": 7, "a.status": "finished"}
            )
            span.set_status(Status(StatusCode.OK))
            span.end()
            otel_context.detach(token)

    def task_with_file(k: int) -> None:
        with Task("root", file=folder / "bench.json"):
            for _ in range(k):
                with Task("task"):
                    pass

    def nested_5(k: int) -> None:  # cost per task, 5 tasks per iteration
        for _ in range(k // 5):
            with Task("1"), Task("2"), Task("3"), Task("4"), Task("5"):
                pass

    def bare_nested_5(k: int) -> None:
        for _ in range(k // 5):
            with (
                tracer.start_as_current_span("1"),
                tracer.start_as_current_span("2"),
                tracer.start_as_current_span("3"),
                tracer.start_as_current_span("4"),
                tracer.start_as_current_span("5"),
            ):
                pass

    if endpoint:
        cases = {"bare span": bare, "task": task}
    else:
        cases = {
            "bare span": bare,
            "span + 5 attributes + status (no tasktrace)": floor,
            "task": task,
            "task under a root with a file": task_with_file,
            "bare span, nested 5 deep": bare_nested_5,
            "task, nested 5 deep": nested_5,
        }
    results = alternate(cases, n, rounds)
    provider.shutdown()
    return results


def _lenskit(n: int, rounds: int) -> float | None:
    try:
        from lenskit.logging.tasks import Task as LensKitTask  # type: ignore[import-not-found]
    except ImportError:
        return None

    def lk(k: int) -> None:
        for _ in range(k):
            with LensKitTask("task"):
                pass

    return alternate({"lenskit": lk}, n, rounds)["lenskit"]


def run(quick: bool = False) -> list[Row]:
    """Measure every case (each configuration in a fresh process) and return the rows."""
    n, rounds = (2000, 3) if quick else (10000, 7)
    local = run_json("overhead", ["--child", "--n", str(n), "--rounds", str(rounds)])
    assert isinstance(local, dict)
    rows = [
        Row(
            "overhead",
            "bare OTel span (BatchSpanProcessor, null exporter)",
            local["bare span"] * 1e6,
            "µs/task",
        )
    ]
    base = local["bare span"]
    floor_s = local["span + 5 attributes + status (no tasktrace)"]
    rows.append(
        Row(
            "overhead",
            "floor: span + 5 attributes + status, no tasktrace",
            floor_s * 1e6,
            "µs/task",
            base * 1e6,
            "what a task must do in the SDK",
        )
    )
    rows.append(
        Row(
            "overhead",
            "task, default meters",
            local["task"] * 1e6,
            "µs/task",
            base * 1e6,
            "≤ 2.0× bare",
            local["task"] / base <= 2.0,
        )
    )
    rows.append(
        Row(
            "overhead",
            "task under a root with a file",
            local["task under a root with a file"] * 1e6,
            "µs/task",
            base * 1e6,
            "≤ 2.5× bare",
            local["task under a root with a file"] / base <= 2.5,
        )
    )
    nb = local["bare span, nested 5 deep"]
    rows.append(
        Row(
            "overhead",
            "task, nested 5 deep (per task)",
            local["task, nested 5 deep"] * 1e6,
            "µs/task",
            nb * 1e6,
            "vs bare nested",
        )
    )
    try:
        from tests.otlp_receivers import OtlpHttpReceiver
    except ImportError:
        OtlpHttpReceiver = None
    if OtlpHttpReceiver is not None:
        with OtlpHttpReceiver() as receiver:
            remote = run_json(
                "overhead",
                [
                    "--child",
                    "--n",
                    str(n),
                    "--rounds",
                    str(rounds),
                    "--endpoint",
                    receiver.endpoint,
                ],
            )
        assert isinstance(remote, dict)
        rows.append(
            Row(
                "overhead",
                "task, OTLP/HTTP export to loopback",
                remote["task"] * 1e6,
                "µs/task",
                remote["bare span"] * 1e6,
                "vs bare span, same exporter",
            )
        )
    lk = _lenskit(n, rounds)
    if lk is not None:
        rows.append(
            Row(
                "overhead",
                "LensKit Task",
                lk * 1e6,
                "µs/task",
                local["task"] * 1e6,
                "vs tasktrace task",
            )
        )
    return rows


def main() -> None:
    """Print the rows, or (with --child) the raw figures of one configuration as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--endpoint")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.n, args.rounds, args.endpoint)))
        return
    from benchmarks.__main__ import print_rows

    print_rows(run(args.quick))


if __name__ == "__main__":
    main()
