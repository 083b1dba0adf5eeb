"""Export pipelines: a bounded exit and flush whatever the endpoint does (export.pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

from ..export_helpers import NESTED_WORKLOAD, clean_env, run_script
from ..otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver, closed_loopback_endpoint

EXIT_BOUND_S = 2.0
SLACK_S = 1.5  # interpreter teardown after the exit handler, on a loaded 2-core machine


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
    assert run.exit_s < 5.0 + SLACK_S
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


def test_task_overhead_does_not_change_when_the_endpoint_is_black_holed(tmp_path: Path) -> None:
    """Per-task time with a silent endpoint stays that of no export (export is off-thread)."""
    with OtlpHttpReceiver(mode="black_hole") as receiver:
        code = f"""
        import time, tasktrace
        from tasktrace import Task

        def best_batch_s():
            best = float("inf")
            for _ in range(8):
                t0 = time.perf_counter()
                for _ in range(50):
                    with Task("t"):
                        pass
                best = min(best, time.perf_counter() - t0)
            return best

        tasktrace.configure(exporters=[])
        best_batch_s()  # warm up
        quiet = best_batch_s()
        tasktrace.configure(endpoint={receiver.endpoint!r}, exit_timeout_s=0.5)
        down = best_batch_s()
        print("per_task_us", quiet / 50 * 1e6, down / 50 * 1e6)
        """
        run = run_script(code, tmp_path, clean_env())
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("per_task_us"))
    quiet_us, down_us = map(float, line.split()[1:])
    print(f"per task: {quiet_us:.1f} us without export, {down_us:.1f} us black-holed")
    assert down_us < 1.5 * quiet_us + 20.0
