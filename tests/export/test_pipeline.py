"""Export pipelines: a bounded exit and flush whatever the endpoint does (export.pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

from ..export_helpers import EXIT_MARGIN_S, NESTED_WORKLOAD, clean_env, run_script
from ..otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver, closed_loopback_endpoint

EXIT_BOUND_S = 2.0


def _assert_file_complete(path: Path) -> None:
    data = json.loads(path.read_text())
    statuses = [data["status"]] + [t["status"] for t in data["subtasks"]]
    assert statuses == ["finished", "finished", "finished", "finished", "failed"]
    assert all(t["duration"] is not None for t in data["subtasks"])


def test_black_holed_grpc_endpoint_exits_within_the_default_bound(tmp_path: Path) -> None:
    """A silent OTLP/gRPC endpoint with default settings: exit within 5 s, one warning."""
    with OtlpGrpcReceiver(mode="black_hole") as receiver:
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    assert run.exit_s is not None
    assert run.exit_s < 5.0 + EXIT_MARGIN_S
    assert len(run.export_warnings()) == 1, run.stderr
    assert run.sdk_failure_lines() == []
    _assert_file_complete(tmp_path / "task.json")


def test_force_flush_of_the_provider_honours_its_timeout_when_black_holed(tmp_path: Path) -> None:
    """tracer_provider().force_flush(300) returns within ~0.3 s, not the exporter's 10 s."""
    with OtlpHttpReceiver(mode="black_hole") as receiver:
        code = """
        import time
        from tasktrace import Task
        from tasktrace.export.provider import tracer_provider
        with Task("x"):
            pass
        t0 = time.perf_counter()
        ok = tracer_provider().force_flush(300)
        print("flush", ok, time.perf_counter() - t0, flush=True)
        """
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, TASKTRACE_EXIT_TIMEOUT_S="0.3"
        )
        run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    _, ok, elapsed_s = next(x for x in run.stdout.splitlines() if x.startswith("flush")).split()
    assert ok == "False"
    assert float(elapsed_s) < 1.0
    assert len(run.export_warnings()) == 1


def test_nothing_listening_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    """A closed port under the default 5 s bound: exit at once (no retries), one warning why."""
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint())
    run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    assert run.exit_s is not None
    assert run.exit_s < 2.0  # the SDK's own retries would take about 4 s of the 5 s bound
    (warning,) = run.export_warnings()
    assert "Connection refused" in warning
    _assert_file_complete(tmp_path / "task.json")


def test_tasks_never_wait_for_an_export_request_hanging_at_a_black_holed_endpoint(
    tmp_path: Path,
) -> None:
    """Tasks go on while an export request hangs unanswered (export runs off the task's thread).

    The script's own endpoint accepts connections and never answers; once an export request
    is in flight (hung, with a 600 s timeout), 2,000 more tasks must finish. A task that
    waited for the export would hang the script, and the test would fail at its timeout.
    """
    code = """
    import os, socket, threading, tasktrace
    from tasktrace import Task

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    in_flight = threading.Event()
    held = []

    def accept():
        while True:
            conn, _ = server.accept()
            held.append(conn)  # read nothing, answer nothing: a black hole
            in_flight.set()

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    tasktrace.configure(endpoint=f"http://127.0.0.1:{port}", timeout_s=600, exit_timeout_s=0.5)
    before = 0
    while not in_flight.is_set():  # a full batch makes the batch thread send a request
        with Task("t"):
            pass
        before += 1
        assert before < 1_000_000, "no export request was ever sent"
    for _ in range(2000):
        with Task("t"):
            pass
    print("done", before, flush=True)
    os._exit(0)
    """
    run = run_script(code, tmp_path, clean_env(), timeout_s=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "done", run.stdout


def test_spans_and_task_metrics_share_one_exit_bound_when_black_holed(tmp_path: Path) -> None:
    """Spans and task metrics both unanswered: the exit waits ``exit_timeout_s`` once in all.

    Each endpoint accepts the request and never answers. Before, the task metrics' exit
    handler waited the whole bound, then the spans' handler waited it again (4.2 s from the
    script's end to its exit with a 2 s bound); one deadline now bounds both.
    """
    with (
        OtlpHttpReceiver(mode="black_hole") as spans,
        OtlpHttpReceiver(mode="black_hole") as task_metrics,
    ):
        env = clean_env(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=spans.traces_endpoint,
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{task_metrics.endpoint}/v1/metrics",
            OTEL_METRICS_EXPORTER="otlp",
            TASKTRACE_EXIT_TIMEOUT_S=str(EXIT_BOUND_S),
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
        attempts = (spans.attempts, task_metrics.attempts)
    assert run.returncode == 0, run.stderr
    assert attempts[0] >= 1, "no span export request: the spans' exit did not wait"
    assert attempts[1] >= 1, "no metrics export request: the metrics' exit did not wait"
    assert run.exit_s is not None
    # One bound plus the exit's own work; two bounds in a row take at least 2 * 2 s.
    assert run.exit_s < 2 * EXIT_BOUND_S - 0.6, run.stderr
    assert len(run.export_warnings()) == 1, run.stderr
    _assert_file_complete(tmp_path / "task.json")


def _otlp_json_spans(folder: Path) -> list[str]:
    names = []
    for path in folder.glob("*.otlp.jsonl"):
        for line in path.read_text().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    names.extend(span["name"] for span in ss["spans"])
    return names


def test_the_otlp_json_file_keeps_every_span_when_the_collector_is_down(tmp_path: Path) -> None:
    """OTLP JSON files beside a collector that refuses or never answers: the file is complete.

    The exit shut every exporter down as soon as one export was refused (or at 80 % of the
    bound for a silent collector), the file exporter too before its batch was written: no file
    at all, "OTLP JSON exporter already shut down; spans dropped".
    """
    names = {"experiment", "load data", "epoch 0", "epoch 1", "evaluate"}
    with OtlpHttpReceiver(mode="black_hole") as silent:
        for endpoint in (closed_loopback_endpoint(), silent.endpoint):
            folder = tmp_path / endpoint.rsplit(":", 1)[-1]
            folder.mkdir()
            env = clean_env(
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                TASKTRACE_OTLP_JSON_DIR=str(folder / "spans"),
                TASKTRACE_EXIT_TIMEOUT_S=str(EXIT_BOUND_S),
            )
            run = run_script(NESTED_WORKLOAD, folder, env, str(folder / "task.json"))
            assert run.returncode == 0, run.stderr
            assert sorted(_otlp_json_spans(folder / "spans")) == sorted(names), run.stderr
            assert "already shut down" not in run.stderr
            assert len(run.export_warnings()) == 1, run.stderr
            assert run.exit_s is not None
            assert run.exit_s < EXIT_BOUND_S + EXIT_MARGIN_S
