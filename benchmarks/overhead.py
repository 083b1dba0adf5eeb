"""Per-task overhead: tasktrace Task enter+exit vs a bare OpenTelemetry SDK span.

Both run in this process, side by side, against the same SDK TracerProvider with a
BatchSpanProcessor and a null exporter; rounds alternate so machine noise hits both alike.
Reported: the median over rounds of the per-iteration cost, and the ratio.

    python -m benchmarks.overhead [--n 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class NullExporter(SpanExporter):
    """Drops every span (measures the SDK's own cost, not an exporter's)."""

    def export(self, spans: Sequence[object]) -> SpanExportResult:  # noqa: ARG002
        """Accept and drop the batch."""
        return SpanExportResult.SUCCESS


def _time_per_iter(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n


def measure(n: int, rounds: int) -> dict[str, float]:
    """Return the median per-iteration seconds of each case."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("benchmark")

    from tasktrace import Task  # after the provider is set: tasktrace adds its processor

    folder = Path(tempfile.mkdtemp())

    def bare(k: int) -> None:
        for _ in range(k):
            with tracer.start_as_current_span("bare"):
                pass

    def task(k: int) -> None:
        for _ in range(k):
            with Task("task"):
                pass

    def task_in_file_tree(k: int) -> None:
        with Task("root", file=folder / "bench.json"):
            for _ in range(k):
                with Task("task"):
                    pass

    cases = {"bare span": bare, "task": task, "task under a root with a file": task_in_file_tree}
    for fn in cases.values():  # warm up
        fn(min(n, 2000))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(_time_per_iter(fn, n))
    provider.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    """Print the table of per-task costs and ratios to the bare span."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results = measure(args.n, args.rounds)
    base = results["bare span"]
    print(f"{'case':34} {'µs/iter':>10} {'× bare span':>12}")
    for name, value in results.items():
        print(f"{name:34} {value * 1e6:10.2f} {value / base:12.2f}")


if __name__ == "__main__":
    main()
