"""How task metrics report durations: the histogram (default) and the ``"sum"`` setting."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.export.metrics_setup import reset_metrics, task_metrics


def _collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Return the data points of every metric the reader collects now, by metric name."""
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def _with_metrics(settings: Settings) -> tuple[MeterProvider, InMemoryMetricReader]:
    reset_settings(settings)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reset_metrics(provider)
    return provider, reader


def test_durations_recorded_under_a_running_task_carry_no_exemplar() -> None:
    """Durations recorded on a task's thread (the waiting limit reached) point at no span.

    The SDK reads the current context when a record passes none (or an empty one): under a
    running parent task that is the parent's sampled span, so the trace-based exemplar filter
    gave its histogram bucket an exemplar naming the parent for its subtasks' durations.
    """
    provider, reader = _with_metrics(Settings(metrics=True))
    try:
        with Task("parent"):
            for _ in range(3):
                with Task("step"):
                    pass
            recorder = task_metrics()
            assert recorder is not None
            recorder.record_durations()  # as a finishing task does past MAX_WAITING_DURATIONS
        points = _collect(reader)["tasktrace.task.duration"]
        steps = [p for p in points if p.attributes["tasktrace.task.label"] == "step"]
        assert [p.count for p in steps] == [3]
        assert [p.exemplars for p in steps] == [[]]
    finally:
        reset_metrics()
        provider.shutdown()


def test_sum_setting_reports_duration_sum_and_count_instead_of_the_histogram() -> None:
    """``metrics_durations="sum"``: two counters with the tasks' durations, no histogram."""
    provider, reader = _with_metrics(Settings(metrics=True, metrics_durations="sum"))
    try:
        tasks = []
        for _ in range(4):
            with Task("step") as task:
                sum(range(10_000))
            tasks.append(task)
        with pytest.raises(ZeroDivisionError), Task("step"):
            _ = 1 / 0
        points = _collect(reader)
        assert "tasktrace.task.duration" not in points
        common = {"tasktrace.task.label": "step"}
        by_status = {
            p.attributes["tasktrace.task.status"]: p.value
            for p in points["tasktrace.task.duration.sum"]
        }
        assert set(by_status) == {"finished", "failed"}
        assert by_status["finished"] == pytest.approx(sum(t.duration for t in tasks))
        counts = {
            p.attributes["tasktrace.task.status"]: p.value for p in points["tasktrace.task.count"]
        }
        assert counts == {"finished": 4, "failed": 1}
        for p in points["tasktrace.task.count"]:
            assert {k: p.attributes[k] for k in common} == common
        assert {p.attributes["cpu.mode"] for p in points["process.cpu.time"]} == {"user", "system"}
    finally:
        reset_metrics()
        provider.shutdown()
