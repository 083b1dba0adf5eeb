"""Task metrics over real OTLP/HTTP, decoded with the official opentelemetry-proto classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.export.metrics_setup import reset_metrics

from ..export_helpers import clean_env, run_script
from ..otlp_receivers import OtlpHttpReceiver, closed_loopback_endpoint, decode_attributes


def _points(
    requests: list[metrics_service_pb2.ExportMetricsServiceRequest],
) -> list[tuple[str, str, str, dict[str, Any], float, dict[str, Any]]]:
    """(name, unit, data kind, attributes, value or sum, resource attributes) of every point."""
    out = []
    for request in requests:
        for rm in request.resource_metrics:
            res = decode_attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        if kind == "histogram":
                            value = point.sum
                        else:
                            value = point.as_double if point.HasField("as_double") else point.as_int
                        attrs = decode_attributes(point.attributes)
                        out.append((metric.name, metric.unit, kind, attrs, value, res))
    return out


@pytest.fixture
def meter_provider(otlp_http_receiver: OtlpHttpReceiver) -> Iterator[MeterProvider]:
    """Yield a meter provider (exports to the receiver when flushed) that tasktrace uses."""
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp_http_receiver.endpoint}/v1/metrics"),
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(
        resource=Resource.create({"service.name": "metrics-test"}), metric_readers=[reader]
    )
    reset_metrics(provider)
    yield provider
    reset_metrics()
    provider.shutdown()


def test_finished_task_records_duration_cpu_and_energy(
    meter_provider: MeterProvider, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """A finished task sends the duration histogram, CPU and energy counters with low-card attrs."""
    reset_settings(Settings(machine="box-1"))
    with Task("train") as task:
        sum(i * i for i in range(200_000))
        task.cpu_power = 12.5  # as an energy meter would set it, in joules
    assert meter_provider.force_flush(10_000)
    points = _points(otlp_http_receiver.metrics_requests())
    common = {
        "tasktrace.task.label": "train",
        "tasktrace.machine": "box-1",
        "tasktrace.task.status": "finished",
    }
    by_name = {}
    for name, unit, kind, attrs, value, res in points:
        by_name.setdefault(name, []).append((unit, kind, attrs, value))
        assert res["service.name"] == "metrics-test"
        assert not any("id" in key.split(".")[-1] for key in attrs), attrs  # never a task id
    [(unit, kind, attrs, value)] = by_name["tasktrace.task.duration"]
    assert (unit, kind, attrs) == ("s", "histogram", common)
    assert value == pytest.approx(task.duration)
    cpu = {a["cpu.mode"]: (u, k, v) for u, k, a, v in by_name["process.cpu.time"]}
    assert set(cpu) == {"user", "system"}
    assert all(u == "s" and k == "sum" for u, k, _ in cpu.values())
    assert cpu["user"][2] + cpu["system"][2] >= 0.5 * (task.cpu_time or 0)
    [(unit, kind, attrs, value)] = by_name["hw.energy"]
    assert (unit, kind, attrs, value) == ("J", "sum", {**common, "hw.type": "cpu"}, 12.5)


def test_running_task_gauges_stop_after_the_task_ends(
    meter_provider: MeterProvider, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """RSS and CPU gauges report a running task after a refresh, and not after it finishes."""
    with Task("epoch") as task:
        task.monitor_refresh()  # what the refresh thread calls every refresh_interval_s
        assert meter_provider.force_flush(10_000)
        running = _points(otlp_http_receiver.metrics_requests())
        otlp_http_receiver.clear()
    gauges = {(n, u): a for n, u, k, a, _, _ in running if k == "gauge"}
    assert gauges == {
        ("tasktrace.task.running.memory.rss", "By"): {"tasktrace.task.label": "epoch"},
        ("tasktrace.task.running.cpu.time", "s"): {"tasktrace.task.label": "epoch"},
    }
    rss = next(v for n, _, _, _, v, _ in running if n == "tasktrace.task.running.memory.rss")
    assert rss > 10_000_000  # a Python process's RSS in bytes
    assert meter_provider.force_flush(10_000)
    after = _points(otlp_http_receiver.metrics_requests())
    assert any(n == "tasktrace.task.duration" for n, *_ in after)
    assert [p for p in after if p[2] == "gauge"] == []


_CHILD = textwrap.dedent("""
    import sys
    from tasktrace import Task
    if sys.argv[1] == "own":
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    with Task("step"):
        pass
    if sys.argv[1] == "own":
        data = reader.get_metrics_data()
        names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics]
        print(",".join(sorted(set(names))))
""")


def _child(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_otel_metrics_environment_configures_export(otlp_http_receiver: OtlpHttpReceiver) -> None:
    """OTEL_METRICS_EXPORTER=otlp + endpoint: a program's tasks reach the receiver at exit."""
    _child(
        "env",
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{otlp_http_receiver.endpoint}/v1/metrics",
            "OTEL_SERVICE_NAME": "from-env",
        },
    )
    points = _points(otlp_http_receiver.metrics_requests())
    assert {"tasktrace.task.duration", "process.cpu.time"} <= {p[0] for p in points}
    assert {p[5]["service.name"] for p in points} == {"from-env"}


@pytest.mark.parametrize(
    ("env", "histogram"),
    [
        ({}, False),  # found, not asked for: the cheap counters
        ({"TASKTRACE_METRICS": "true"}, True),  # asked for
        # Somebody else's provider: its OTEL_* variables are its owner's (opentelemetry-distro
        # sets OTEL_METRICS_EXPORTER=otlp itself), not a request for task metrics.
        ({"OTEL_METRICS_EXPORTER": "otlp"}, False),
        ({"TASKTRACE_METRICS_DURATIONS": "histogram"}, True),  # chosen
        ({"TASKTRACE_METRICS": "true", "TASKTRACE_METRICS_DURATIONS": "sum"}, False),
    ],
)
def test_existing_global_meter_provider_is_reused(env: dict[str, str], histogram: bool) -> None:
    """A meter provider the program installed before its first task receives the task metrics.

    With ``metrics_durations`` left at ``auto``, a provider found installed (task metrics not
    asked for) gets the duration counters, which cost a task nothing at collection; the
    histogram where task metrics were asked for or the setting chooses it.
    """
    names = set(_child("own", env).stdout.strip().split(","))
    assert "process.cpu.time" in names
    counters = {"tasktrace.task.duration.sum", "tasktrace.task.count"}
    if histogram:
        assert "tasktrace.task.duration" in names
        assert not counters & names
    else:
        assert "tasktrace.task.duration" not in names
        assert counters <= names


def test_the_first_task_is_watched_by_the_gauges_while_it_runs(
    otlp_http_receiver: OtlpHttpReceiver,
) -> None:
    """Metrics set up from the environment report the first, only, task while it runs.

    Before: the meter provider was created when the first task *finished*, so a run of one
    long task (the case "Watching long runs" is for) exported no running gauge at all.
    """
    script = "import time\nfrom tasktrace import Task\nwith Task('long'):\n    time.sleep(2)\n"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    env = {
        **base,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{otlp_http_receiver.endpoint}/v1/metrics",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",  # ms: several collections while the task runs
    }
    subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=True
    )
    points = _points(otlp_http_receiver.metrics_requests())
    gauges = {(n, a.get("tasktrace.task.label")) for n, _, k, a, _, _ in points if k == "gauge"}
    assert ("tasktrace.task.running.memory.rss", "long") in gauges
    assert ("tasktrace.task.running.cpu.time", "long") in gauges


EXIT_BOUND_S = 3.0  # from the script's end to its exit handlers' end: the span side's ~0.5 s


def test_metrics_to_a_closed_port_cost_one_warning_and_no_wait_at_exit(tmp_path: Path) -> None:
    """Nothing listens at the metrics endpoint: one tasktrace warning, a prompt exit.

    Before: the OTLP metric exporter's own "Transient error ... retrying in 3.46s" lines (three)
    and "Failed to export metrics batch", and the exit waited for its retries (9.5 s), where
    spans to the same port cost one warning and about half a second. Timed from the script's
    last line to the end of its exit handlers, so that the interpreter's start-up and teardown
    on a loaded machine are not counted.
    """
    endpoint = closed_loopback_endpoint()
    env = clean_env(OTEL_METRICS_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    code = "import time\nfrom tasktrace import Task\nwith Task('t'):\n    pass\n"
    done = run_script(code + "print('end', time.time(), flush=True)\n", tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert done.exit_s is not None
    assert done.exit_s < EXIT_BOUND_S, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    metric_lines = [line for line in lines if "metric" in line.lower()]
    assert len(metric_lines) == 1, done.stderr
    assert metric_lines[0].startswith("tasktrace: metric export to ")
    assert f"{endpoint}/v1/metrics" in metric_lines[0]
    assert "Connection refused" in metric_lines[0]


def test_metrics_decided_again_on_the_same_provider_keep_recording() -> None:
    """reset_metrics(provider) with the same provider again: later durations are exported too.

    The SDK keeps the first registration of an instrument name, so a second set of tasktrace
    instruments on one provider had its collection callbacks ignored: the durations of every
    task after the reset waited forever and the counters froze.
    """
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reset_settings(Settings(metrics=True))
    try:
        for round_ in range(3):
            reset_metrics(provider)
            for _ in range(4):
                with Task("step"):
                    pass
            data = reader.get_metrics_data()
            counts = [
                point.count
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
                if metric.name == "tasktrace.task.duration"
                for point in metric.data.data_points
            ]
            assert counts == [4 * (round_ + 1)], (round_, counts)
    finally:
        reset_metrics()
        provider.shutdown()


_FORKED = textwrap.dedent("""
    import json, os, sys
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    from tasktrace import Task
    for _ in range(3):
        with Task("parent-task") as t:
            sum(i * i for i in range(100_000))
            t.cpu_power = 5.0  # joules, as an energy meter would set them
    with Task("parent-running"):  # running in the parent at the fork: its gauge is the parent's
        reader.get_metrics_data()  # a collection in the parent before the fork
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid:  # the parent grows by 300 MB, then lets the child collect
            os.close(read_end)
            block = bytearray(300 << 20)
            block[::4096] = b"x" * len(block[::4096])
            os.write(write_end, b"go")
            os.close(write_end)
            os.waitpid(pid, 0)
            sys.exit(0)
    os.close(write_end)
    os.read(read_end, 2)
    with Task("child-task") as t:
        t.cpu_power = 1.0
    with Task("child-running"):
        points = []
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        points.append([m.name, dict(p.attributes), getattr(p, "value", None)])
    import psutil
    print(json.dumps({"points": points, "rss": psutil.Process().memory_info().rss}))
    sys.stdout.flush()
    os._exit(0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() exists on POSIX systems only")
def test_forked_child_reports_only_its_own_tasks() -> None:
    """A forked child's counters hold its own tasks, its RSS gauge is its own process's.

    The child inherits the parent's totals and psutil's process object at the fork; reporting
    them would count the parent's finished tasks twice (once per process) and the parent's RSS
    as the child's.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    done = subprocess.run(
        [sys.executable, "-c", _FORKED],
        env={**base, "TASKTRACE_METRICS": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    by_name: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for name, attrs, value in out["points"]:
        by_name.setdefault(name, []).append((attrs, value))
    for name in ("process.cpu.time", "hw.energy"):
        labels = {attrs["tasktrace.task.label"] for attrs, _ in by_name[name]}
        print(name, by_name[name])  # TEMP
    assert [v for _, v in by_name["hw.energy"]] == [1.0]
    gauge = by_name["tasktrace.task.running.memory.rss"]
    rss = [v for _, v in gauge]
    labels = [attrs["tasktrace.task.label"] for attrs, _ in gauge]
    assert labels == ["child-running"], by_name  # the parent's running task is the parent's
    # The parent had grown by 300 MB when the child collected: the child's own RSS is far below.
    assert max(rss) < out["rss"] + (150 << 20), (rss, out["rss"])


def test_duration_histogram_buckets_are_seconds(
    meter_provider: MeterProvider, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """Tasks of 20 ms and 0.3 s land in different buckets of second-sized boundaries.

    The SDK's default boundaries (0, 5, 10, 25, ... 10,000) are meant for milliseconds: every
    task shorter than 5 s fell into one bucket, and a dashboard's quantiles read 2.5 s.
    """
    durations = []
    for seconds in (0.02, 0.3):
        with Task("epoch") as task:
            time.sleep(seconds)
        assert task.duration is not None
        durations.append(task.duration)
    assert meter_provider.force_flush(10_000)
    (point,) = [
        point
        for request in otlp_http_receiver.metrics_requests()
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "tasktrace.task.duration"
        for point in metric.histogram.data_points
    ]
    bounds = list(point.explicit_bounds)
    assert (bounds[0], bounds[-1]) == (0.001, 86400.0), bounds
    counts = list(point.bucket_counts)
    # Bucket i holds (bounds[i - 1], bounds[i]]: each task in its own, by its duration.
    expected = [sum(1 for bound in bounds if bound < d) for d in durations]
    assert expected[0] != expected[1], (durations, bounds)
    assert [i for i, count in enumerate(counts) for _ in range(count)] == sorted(expected)


_LATE_PROVIDER = textwrap.dedent("""
    from tasktrace import Task
    with Task("warm-up"):
        pass
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    mine = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(mine)
    print("global is mine:", metrics.get_meter_provider() is mine)
    metrics.get_meter("myapp").create_counter("myapp.requests").add(5)
    with Task("train"):
        pass
    data = reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    print("seen:", ",".join(sorted(names)))
""")


@pytest.mark.parametrize(
    ("env", "durations"),
    [
        ({}, "tasktrace.task.duration.sum"),  # the program's provider, not asked: counters
        ({"OTEL_METRICS_EXPORTER": "console"}, "tasktrace.task.duration.sum"),
        ({"TASKTRACE_METRICS": "true"}, "tasktrace.task.duration"),  # asked: the histogram
    ],
    ids=["nothing set", "OTEL_METRICS_EXPORTER", "TASKTRACE_METRICS"],
)
def test_a_meter_provider_installed_after_the_first_task_is_used(
    env: dict[str, str], durations: str
) -> None:
    """No order of set-up to get right: the program's provider is installed, and gets both.

    Before: with metrics asked for, tasktrace's own provider was installed globally and the
    program's was refused ("Overriding of current MeterProvider is not allowed"); with nothing
    set, a provider installed after the first task never got task metrics.
    """
    done = subprocess.run(
        [sys.executable, "-c", _LATE_PROVIDER],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))},
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "global is mine: True" in done.stdout, done.stderr
    assert "Overriding" not in done.stderr
    seen = done.stdout.split("seen: ")[1].split()[0].split(",")
    assert {"myapp.requests", durations, "process.cpu.time"} <= set(seen), seen
