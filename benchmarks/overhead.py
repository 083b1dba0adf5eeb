"""Per-task overhead: tasktrace Task enter+exit vs a bare OpenTelemetry SDK span, side by side.

Every case runs against the same SDK TracerProvider (BatchSpanProcessor + null exporter, or an
OTLP/HTTP exporter to a loopback receiver for the export case), installed globally before
tasktrace is imported. The cases alternate round by round so that machine noise hits them
alike; each round times every case twice, with the garbage collector off (collected before the
timed call: the case's own work) and on (as a program runs, where a case also pays for
collections that the garbage of earlier cases triggers). The figures are medians of the rounds
per task, and ratios are to the bare span of the same run, GC off to GC off, GC on to GC on.

Cases (rows):

- bare span: ``tracer.start_as_current_span("bare")``, nothing else;
- floor: what any nested task has to do in the SDK and nothing else: a span started with two
  attributes (task id, parent id), made current under a context key, four attributes and a
  status set at the end, ended, the context detached;
- floor + measurements + parent link: the floor, plus ``perf_counter`` and ``getrusage`` at
  start and finish and an append to the parent's list (a lean task, by hand);
- nested task: ``with Task("task")`` inside a running top-level task (target ≤ 2.0×);
- nested task with task metrics on: the same, with a global SDK ``MeterProvider`` (a periodic
  reader, null exporter) installed and the ``metrics`` setting unset, so task metrics are on
  because a provider was found (as for a Logfire or ``opentelemetry-instrument`` user) and
  durations are reported as counters (``metrics_durations="auto"``): the task's own path only;
- … and the collection counted: the same, each round ended by the meter provider's
  ``force_flush`` (the collection reads the totals: one point per label and status). The
  target (the ratio grows by ≤ 15%) is judged on this row. The other task cases run with the
  ``metrics`` setting off, which is the same path as having no meter provider;
- … metrics asked for: the ``metrics`` setting true, so durations go into the
  ``tasktrace.task.duration`` histogram (a meter provider of its own, flushed at each round's
  end: the collection records the round's durations into the SDK's histogram, about 69,000
  instructions each, moved off the task's path, not removed): the opt-in's cost;
- top-level task: ``with Task("task")`` with no parent (resets the RSS high-water mark);
- a user's span inside a task: ``tracer.start_as_current_span`` inside a running task, which
  the tree processor makes a node of the task tree (``include_spans``, on by default);
- task under a root with a file: nested tasks whose root writes a task file at start and at
  finish (the whole tree, every round; target ≤ 2.5×);
- nested 5 deep: five tasks (spans) inside each other, per task;
- OTLP/HTTP export to loopback (in a second process): the bare span and the top-level task.

    python -m benchmarks.overhead            # print the table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from benchmarks._common import Row, alternate, alternate_gc, print_rows, run_json


class NullExporter(SpanExporter):
    """Drops every span (measures the SDK's own cost, not an exporter's)."""

    def export(self, spans: Sequence[object]) -> SpanExportResult:
        """Accept and drop the batch."""
        del spans
        return SpanExportResult.SUCCESS


class NullMetricExporter(MetricExporter):
    """Drops every metrics batch."""

    def __init__(self) -> None:
        """Cumulative temporality, default aggregations."""
        super().__init__(preferred_temporality={}, preferred_aggregation={})

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        """Accept and drop the batch."""
        del metrics_data, timeout_millis, kwargs
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        del timeout_millis
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        """Nothing to release."""
        del timeout_millis, kwargs


BARE = "bare span"
FLOOR = "floor: span + 6 attributes + status (no tasktrace)"
LEAN = "floor + perf_counter/getrusage at start and finish + parent link (no tasktrace)"
NESTED = "nested task"
NESTED_METRICS = "nested task, task metrics on (global MeterProvider)"
NESTED_COLLECTED = "nested task, task metrics on, the collection in the time"
NESTED_HISTOGRAM = "nested task, task metrics asked for (duration histogram), collection timed"
TOP = "top-level task"
USER_SPAN = "user span inside a task"
WITH_FILE = "task under a root with a file"
BARE_5 = "bare span, nested 5 deep"
TASK_5 = "task, nested 5 deep"
ORDER = (
    BARE,
    FLOOR,
    LEAN,
    NESTED,
    NESTED_METRICS,
    NESTED_COLLECTED,
    NESTED_HISTOGRAM,
    TOP,
    USER_SPAN,
    WITH_FILE,
    BARE_5,
    TASK_5,
)
CaseFn = Callable[[int], None]


def _cases(
    tracer: trace.Tracer, folder: Path, collect: Callable[[], object]
) -> tuple[dict[str, CaseFn], dict[str, Callable[[], None]]]:
    cases = sdk_cases(tracer)
    tasks, prepare = task_cases(folder, collect)
    cases.update(tasks)
    return {name: cases[name] for name in ORDER}, prepare


def sdk_cases(tracer: trace.Tracer) -> dict[str, CaseFn]:
    """Return the cases without tasktrace (bare, floor, lean, bare nested 5) on ``tracer``."""
    key = otel_context.create_key("floor")

    def bare(k: int) -> None:
        for _ in range(k):
            with tracer.start_as_current_span("bare"):
                pass

    def floor(k: int) -> None:
        for _ in range(k):
            span = tracer.start_span(
                "floor", attributes={"tasktrace.task.id": "x", "tasktrace.task.parent_id": "y"}
            )
            token = otel_context.attach(
                otel_context.set_value(key, 1, trace.set_span_in_context(span))
            )
            span.set_attributes(
                {"a.duration_s": 1.0, "a.cpu_time_s": 0.5, "a.peak": 7, "a.status": "finished"}
            )
            span.set_status(Status(StatusCode.OK))
            span.end()
            otel_context.detach(token)

    getrusage, self_ = resource.getrusage, resource.RUSAGE_SELF
    perf = time.perf_counter

    def lean(k: int) -> None:
        children: list[object] = []
        for _ in range(k):
            span = tracer.start_span(
                "lean", attributes={"tasktrace.task.id": "x", "tasktrace.task.parent_id": "y"}
            )
            token = otel_context.attach(
                otel_context.set_value(key, 1, trace.set_span_in_context(span))
            )
            children.append(span)
            p0, r0 = perf(), getrusage(self_)
            p1, r1 = perf(), getrusage(self_)
            span.set_attributes(
                {
                    "a.duration_s": p1 - p0,
                    "a.cpu_time_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                    "a.peak": r1.ru_maxrss,
                    "a.status": "finished",
                }
            )
            span.set_status(Status(StatusCode.OK))
            span.end()
            otel_context.detach(token)

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

    return {BARE: bare, FLOOR: floor, LEAN: lean, BARE_5: bare_nested_5}


def task_cases(
    folder: Path, collect: Callable[[], object] | None = None
) -> tuple[dict[str, CaseFn], dict[str, Callable[[], None]]]:
    """Return the task cases and, per case, what to run before it (the metrics setting).

    Imports tasktrace: call after the global tracer provider is set. A task file goes in
    ``folder``. ``collect`` (the meter provider's ``force_flush``) ends the case that counts
    the metrics collection's work (left out without it).
    """
    from tasktrace import Task  # after the provider: tasktrace adds its processor to it
    from tasktrace.core.settings import load_settings, reset_settings
    from tasktrace.export.metrics_setup import reset_metrics

    def nested(k: int) -> None:
        with Task("root"):
            for _ in range(k):
                with Task("task"):
                    pass

    def nested_collected(k: int) -> None:
        # tasktrace records the waiting durations into the SDK's histogram at collection
        # (about 69,000 instructions a record): the work is moved off the task's path, not
        # removed, so this case counts it.
        nested(k)
        if collect is not None:
            collect()

    def top(k: int) -> None:
        for _ in range(k):
            with Task("task"):
                pass

    user_tracer = trace.get_tracer("user-code")

    def user_span(k: int) -> None:  # a user's span (an instrumented call) joins the tree
        with Task("root"):
            for _ in range(k):
                with user_tracer.start_as_current_span("user"):
                    pass

    def with_file(k: int) -> None:
        with Task("root", file=folder / "bench.json"):
            for _ in range(k):
                with Task("task"):
                    pass

    def nested_5(k: int) -> None:  # cost per task, 5 tasks per iteration
        for _ in range(k // 5):
            with Task("1"), Task("2"), Task("3"), Task("4"), Task("5"):
                pass

    metrics_off = load_settings(metrics=False)
    # The metrics setting unset: on because a meter provider is installed globally, durations
    # as counters ("auto": task metrics not asked for), as for a Logfire user.
    metrics_found = load_settings(metrics=None, metrics_durations="auto")

    def off() -> None:
        reset_settings(metrics_off)
        reset_metrics()

    def on() -> None:
        reset_settings(metrics_found)
        reset_metrics()

    cases: dict[str, CaseFn] = {
        NESTED: nested,
        NESTED_METRICS: nested,
        TOP: top,
        USER_SPAN: user_span,
        WITH_FILE: with_file,
        TASK_5: nested_5,
    }
    if collect is not None:
        cases[NESTED_COLLECTED] = nested_collected

    def on_collected() -> None:
        # The durations that the other metrics case (which never collects) left waiting are
        # recorded now, untimed: each timed call of this case records its own tasks' only.
        # (Without this, its GC-off call recorded three calls' worth: 3.40× vs 2.76× GC on.)
        on()
        if collect is not None:
            collect()

    prepare = {name: off for name in (NESTED, TOP, USER_SPAN, WITH_FILE, TASK_5)}
    prepare[NESTED_METRICS] = on
    prepare[NESTED_COLLECTED] = on_collected
    if collect is not None:
        cases[NESTED_HISTOGRAM], prepare[NESTED_HISTOGRAM] = _histogram_case(nested)
    return cases, prepare


def _histogram_case(nested: CaseFn) -> tuple[CaseFn, Callable[[], None]]:
    """Task metrics asked for (the metrics setting true): the duration histogram.

    On a meter provider of its own (the global one keeps the counters it was given first),
    flushed at the end of each call: the collection's work is counted.
    """
    from tasktrace.core.settings import load_settings, reset_settings
    from tasktrace.export.metrics_setup import reset_metrics

    asked = MeterProvider(metric_readers=[PeriodicExportingMetricReader(NullMetricExporter())])
    settings = load_settings(metrics=True, metrics_durations="auto")

    def histogram(k: int) -> None:
        nested(k)
        asked.force_flush()

    def histogram_on() -> None:
        reset_settings(settings)
        reset_metrics(asked)
        asked.force_flush()  # nothing left waiting from an earlier call

    return histogram, histogram_on


def _measure(
    n: int, rounds: int, endpoint: str | None
) -> dict[str, tuple[float, float, list[float]]]:
    provider = TracerProvider()
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    else:
        exporter = NullExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 17))
    trace.set_tracer_provider(provider)
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(NullMetricExporter())]
    )
    metrics.set_meter_provider(meter_provider)
    tracer = trace.get_tracer("benchmark")
    cases, prepare = _cases(tracer, Path(tempfile.mkdtemp()), meter_provider.force_flush)
    if endpoint:
        cases = {BARE: cases[BARE], TOP: cases[TOP]}
    results = alternate_gc(cases, n, rounds, prepare)
    provider.shutdown()
    meter_provider.shutdown()
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


Figures = dict[str, list[Any]]  # name → [GC-off median, GC-on median, GC-off samples] (s)


def _row(
    figures: Figures, name: str, ref: str, metric: str, *, target: str = "", limit: float = 0.0
) -> Row:
    off, on = figures[name][:2]
    ref_off, ref_on = figures[ref][:2]
    if target:  # beside the ratio of the medians: the median of the rounds' own ratios
        target = f"{target} (paired {_paired_ratio(figures, name, ref):.2f}×)"
    return Row(
        "overhead",
        metric,
        off * 1e6,
        "µs/task",
        ref_off * 1e6,
        target,
        (off / ref_off <= limit) if limit else None,
        on * 1e6,
        ref_on * 1e6,
    )


def _paired_ratio(figures: Figures, name: str, ref: str) -> float:
    """Median over the rounds of ``name``'s GC-off time over ``ref``'s in the same round.

    A burst of a noisy neighbour that slows one round slows both cases of the pair, so this
    moves less between runs than the ratio of the medians (which the targets are judged on).
    """
    pairs = zip(figures[name][2], figures[ref][2], strict=True)
    return statistics.median(case / reference for case, reference in pairs)


def run(quick: bool = False) -> list[Row]:
    """Measure every case (each configuration in a fresh process) and return the rows."""
    # Many short rounds: noise from other tenants of a shared machine comes in bursts, and
    # short alternating rounds spread each burst over every case (medians stay put).
    n, rounds = (1000, 5) if quick else (2000, 31)
    # No OTEL_* / TASKTRACE_* variable of the caller's: the metrics cases' choices are the code's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    local = run_json("overhead", ["--child", "--n", str(n), "--rounds", str(rounds)], env)
    assert isinstance(local, dict)
    bare_off, bare_on = local[BARE][:2]
    rows = [
        Row(
            "overhead",
            "bare OTel span (BatchSpanProcessor, null exporter)",
            bare_off * 1e6,
            "µs/task",
            gc_on=bare_on * 1e6,
        ),
        _row(local, FLOOR, BARE, "floor: span + 6 attributes + status, no tasktrace"),
        _row(local, LEAN, BARE, "floor + 2×(perf_counter, getrusage) + parent link"),
        _row(local, NESTED, BARE, "nested task", target="≤ 2.0× bare", limit=2.0),
    ]
    nested_ratio = local[NESTED][0] / bare_off
    metrics_ratio = local[NESTED_METRICS][0] / bare_off
    row = _row(local, NESTED_METRICS, BARE, "nested task, task metrics on (MeterProvider)")
    row.target = f"task's path only (grew {metrics_ratio / nested_ratio - 1:+.0%})"
    rows.append(row)
    collected_ratio = local[NESTED_COLLECTED][0] / bare_off
    row = _row(local, NESTED_COLLECTED, BARE, "… and the metrics collection's work counted")
    row.target = f"≤ 1.15 × {nested_ratio:.2f}× (grew {collected_ratio / nested_ratio - 1:+.0%})"
    row.met = collected_ratio <= 1.15 * nested_ratio
    rows.append(row)
    histogram_ratio = local[NESTED_HISTOGRAM][0] / bare_off
    row = _row(local, NESTED_HISTOGRAM, BARE, "… metrics asked for: duration histogram")
    row.target = f"opt-in cost, collection counted (grew {histogram_ratio / nested_ratio - 1:+.0%})"
    rows.append(row)
    rows.append(_row(local, TOP, BARE, "top-level task (resets the RSS mark)"))
    rows.append(_row(local, USER_SPAN, BARE, "a user's span inside a task (a node of the tree)"))
    rows.append(
        _row(
            local, WITH_FILE, BARE, "task under a root with a file", target="≤ 2.5× bare", limit=2.5
        )
    )
    rows.append(
        _row(local, TASK_5, BARE_5, "task, nested 5 deep (per task)", target="vs bare nested")
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
            _row(
                remote,
                TOP,
                BARE,
                "top-level task, OTLP/HTTP export to loopback",
                target="vs bare span, same exporter",
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
                local[TOP][1] * 1e6,
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
    print_rows(run(args.quick))


if __name__ == "__main__":
    main()
