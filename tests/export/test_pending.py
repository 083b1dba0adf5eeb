"""Pending snapshot spans of running tasks, exported over real OTLP/HTTP to a loopback receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.export.pending import PENDING_SPAN_ID, PendingSpanFilter
from tasktrace.task import lifecycle, runtime
from tasktrace.testing import InMemorySpanExporter
from tasktrace.tree.processor import tree

from ..export_helpers import run_workload
from ..otlp_receivers import OtlpHttpReceiver


@pytest.fixture
def use_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TracerProvider]]:
    """Route tasks to a provider of the test's own (with the task-tree processor), pending on."""
    reset_settings(Settings(pending_spans=True, refresh_interval_s=3600))  # rounds: by hand
    made: list[TracerProvider] = []

    def install(*processors: SpanProcessor) -> TracerProvider:
        provider = TracerProvider()
        provider.add_span_processor(tree)
        for processor in processors:
            provider.add_span_processor(processor)
        tracer = provider.get_tracer("tasktrace")
        # The places a task gets its tracer: at start (a root's, a nested task's) and refresh.
        for module, name in (
            (lifecycle, "get_tracer"),
            (lifecycle, "current_tracer"),
            (runtime, "get_tracer"),
        ):
            monkeypatch.setattr(module, name, lambda: tracer)
        made.append(provider)
        return provider

    yield install  # type: ignore[misc]
    for provider in made:
        provider.shutdown()


def _otlp(receiver: OtlpHttpReceiver) -> PendingSpanFilter:
    return PendingSpanFilter(OTLPSpanExporter(endpoint=receiver.traces_endpoint))


def test_snapshots_at_start_and_each_refresh_then_real_span(
    use_provider: object, otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """Start + two refresh rounds send three snapshots (new ids, parent = real span), then it."""
    use_provider(SimpleSpanProcessor(_otlp(otlp_http_receiver)))  # type: ignore[operator]
    path = tmp_path / "long.json"
    with Task("long", file=path) as task:
        otlp_http_receiver.wait_for(1)
        for _ in range(2):
            tree.monitor.refresh_all()  # one round of the refresh thread
        otlp_http_receiver.wait_for(3)
    otlp_http_receiver.wait_for(4)
    spans = [s for s in otlp_http_receiver.spans() if s.trace_id == task.trace_id]
    assert len(spans) == 4
    *snapshots, real = spans
    assert real.span_id == task.span_id
    assert PENDING_SPAN_ID not in real.attributes
    assert len({s.span_id for s in snapshots} | {real.span_id}) == 4
    for snap in snapshots:
        assert snap.name == "long"
        assert snap.trace_id == real.trace_id
        assert snap.parent_span_id == real.span_id
        assert snap.attributes[PENDING_SPAN_ID] == real.span_id
        assert snap.attributes["tasktrace.task.status"] == "running"
        assert snap.start_ns == snap.end_ns
    durations = [s.attributes.get("tasktrace.task.duration_s", 0.0) for s in snapshots]
    assert durations == sorted(durations)
    assert "tasktrace.task.duration_s" in snapshots[-1].attributes
    assert task.subtasks == []
    assert json.loads(path.read_text()).get("subtasks") == []


def test_batch_with_real_span_drops_its_snapshot(use_provider: object) -> None:
    """A batch holding a snapshot and its real span exports only the real span."""
    with OtlpHttpReceiver() as filtered, OtlpHttpReceiver() as unfiltered:
        provider = use_provider(  # type: ignore[operator]
            BatchSpanProcessor(_otlp(filtered), schedule_delay_millis=60_000),
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=unfiltered.traces_endpoint),
                schedule_delay_millis=60_000,
            ),
        )
        with Task("short") as task:
            pass
        assert provider.force_flush(10_000)
        assert len(unfiltered.wait_for(2)) == 2  # the batch did hold the snapshot
        spans = filtered.wait_for(1)
    assert [(s.span_id, s.name) for s in spans] == [(task.span_id, "short")]


def test_pending_spans_are_off_by_default(task_spans: InMemorySpanExporter) -> None:
    """Without the setting, a refreshed task exports only its own span."""
    with Task("plain") as task:
        task.monitor_refresh()
    spans = task_spans.get_finished_spans()
    assert [s.name for s in spans] == ["plain"]


@pytest.mark.parametrize(("delay_ms", "snapshots_expected"), [("60000", False), ("20", True)])
def test_pending_snapshots_in_the_real_spans_batch_are_dropped(
    tmp_path: Path, delay_ms: str, snapshots_expected: bool
) -> None:
    """Snapshots batched with their real span are dropped; ones sent earlier arrive."""
    with OtlpHttpReceiver() as receiver:
        run_workload(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": delay_ms,  # 60 s: one batch, sent at exit
                "TASKTRACE_PENDING_SPANS": "true",
                "TASKTRACE_REFRESH_INTERVAL_S": "0.1",
            },
            tmp_path,
        )
        spans = receiver.wait_for(2, timeout_s=10)
    real = sorted(s.name for s in spans if "tasktrace.pending.span_id" not in s.attributes)
    snapshots = [s for s in spans if "tasktrace.pending.span_id" in s.attributes]
    assert real == ["child", "root"]
    assert bool(snapshots) is snapshots_expected
