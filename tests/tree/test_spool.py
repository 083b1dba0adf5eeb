"""Tasks in child processes: one tree, one trace, CPU counted once (multiprocessing, run)."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus, child_environment
from tasktrace.cli import main

from .. import parallel_workers as workers
from ..otlp_receivers import OtlpHttpReceiver


def _all_cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (getrusage)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _check_cpu_counted_once(root: Task, measured_s: float | None) -> None:
    own = root.cpu_time or 0.0
    parts = own + sum(t.total_cpu() or 0.0 for t in root.subtasks if t.subprocess)
    total = root.total_cpu()
    assert total is not None
    assert total == pytest.approx(parts, rel=0.05)
    if measured_s is not None:  # never more than the processes really used
        assert total <= measured_s * 1.05 + 0.05


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_join_the_tree(method: str, tmp_path: Path) -> None:
    """Each start method: child tasks are subprocess subtasks, same trace, CPU counted once."""
    ctx = multiprocessing.get_context(method)
    out = tmp_path / "tree.json"
    before = _all_cpu_s()
    with Task("parent", file=out) as root:
        procs = [
            ctx.Process(target=workers.worker_tasks, args=(root, w, 5, 0.02)) for w in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    # forkserver children are the server's, not ours: RUSAGE_CHILDREN cannot bound them
    measured = None if method == "forkserver" else _all_cpu_s() - before
    saved = Task.model_validate_json(out.read_text())
    for tree in (root, saved):
        workers_ = sorted(tree.subtasks, key=lambda t: t.label)
        assert [t.label for t in workers_] == [f"worker {w}" for w in range(4)]
        for w, child in enumerate(workers_):
            assert child.subprocess
            assert child.parent_id == root.task_id
            assert child.trace_id == root.trace_id
            assert child.status is TaskStatus.FINISHED
            assert [j.label for j in child.subtasks] == [f"job {w}.{j}" for j in range(5)]
            assert all(j.parent_id == child.task_id for j in child.subtasks)
            assert (child.cpu_time or 0) >= 5 * 0.02 * 0.9
    _check_cpu_counted_once(root, measured)


def test_process_pool_executor_4_workers_50_tasks_each(tmp_path: Path) -> None:
    """ProcessPoolExecutor (4 workers x 50 tasks): 200 subprocess subtasks under the parent."""
    out = tmp_path / "pool.json"
    before = _all_cpu_s()
    with Task("pool", file=out) as root, ProcessPoolExecutor(4) as pool:
        pids = list(pool.map(workers.one_task, [root] * 200, range(200), [0.005] * 200))
    measured = _all_cpu_s() - before
    assert len(set(pids)) <= 4
    saved = Task.model_validate_json(out.read_text())
    for tree in (root, saved):
        assert sorted(t.job for t in tree.subtasks) == list(range(200))
        assert all(t.subprocess and t.parent_id == root.task_id for t in tree.subtasks)
        assert {t.trace_id for t in tree.subtasks} == {root.trace_id}
    _check_cpu_counted_once(root, measured)


def test_forked_child_flushes_spans_before_os_exit(otlp_http_receiver: OtlpHttpReceiver) -> None:
    """A forked child ending by os._exit still exports its task's span (flush at finish)."""
    ctx = multiprocessing.get_context("fork")
    with Task("fork parent") as root:
        p = ctx.Process(
            target=workers.flush_then_exit, args=(root, otlp_http_receiver.traces_endpoint)
        )
        p.start()
        p.join(30)
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=10)
    assert span.name == "forked child"
    assert span.trace_id == root.trace_id
    assert span.parent_span_id == root.span_id


def test_fork_child_does_not_write_parent_file_or_finish_its_tasks(tmp_path: Path) -> None:
    """After os.fork the child neither rewrites the parent's file nor finishes its tasks."""
    out = tmp_path / "parent.json"
    with Task("parent", file=out) as root:
        before = out.read_bytes()
        pid = os.fork()
        if pid == 0:  # the child: refresh and finish the inherited task, then one of its own
            try:
                with Task("child work"):
                    pass
                root.update()
                root.finish()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert out.read_bytes() == before
        assert root.status is TaskStatus.RUNNING
    saved = Task.model_validate_json(out.read_text())
    assert saved.status is TaskStatus.FINISHED
    assert [(t.label, t.subprocess) for t in saved.subtasks] == [("child work", True)]


SCRIPT = textwrap.dedent(
    """
    import time
    from tasktrace import Task

    def busy(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    with Task("script", kind="eval"):
        with Task("inner"):
            busy(0.3)
    """
)


def test_run_python_script_nests_under_run_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """`tasktrace run -- python script.py`: the script's tasks nest under the run task, CPU once."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run.json"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_http_receiver.traces_endpoint)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert main(["run", "-q", "-f", str(out), "--", sys.executable, str(script)]) == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    run = Task.model_validate_json(out.read_text())
    (child,) = run.subtasks
    assert (child.label, child.subprocess, child.parent_id) == ("script", True, run.task_id)
    assert child.trace_id == run.trace_id
    assert [t.label for t in child.subtasks] == ["inner"]
    assert (child.cpu_time or 0) >= 0.3
    # CPU counted once: the reaped total holds the script's tasks and the interpreter's start.
    assert run.children_cpu_time_s is not None
    assert (run.children_cpu_time_s + (child.total_cpu() or 0)) == pytest.approx(reaped, rel=0.05)
    assert run.total_cpu() == pytest.approx((run.cpu_time or 0) + reaped, rel=0.05)
    spans = {s.name: s for s in otlp_http_receiver.wait_for(2, timeout_s=10)}
    assert spans["script"].trace_id == run.trace_id
    assert spans["script"].parent_span_id == run.span_id
    assert spans["inner"].parent_span_id == spans["script"].span_id


def test_run_shell_busy_loop_cpu_counted_once(tmp_path: Path) -> None:
    """`tasktrace run -- sh -c "busy loop"`: the shell's CPU is counted once, as children CPU."""
    out = tmp_path / "run.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    loop = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
    assert main(["run", "-q", "-f", str(out), "--", "sh", "-c", loop]) == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    run = Task.model_validate_json(out.read_text())
    assert run.subtasks == []
    assert run.children_cpu_time_s == pytest.approx(reaped, rel=0.05)
    assert run.total_cpu() == pytest.approx((run.cpu_time or 0) + reaped, rel=0.05)


KILLED_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tasktrace import Task

    with Task("doomed", step=1):
        Path(sys.argv[1]).write_text("ready")
        time.sleep(60)
    """
)


def test_sigkilled_child_leaves_its_last_record(tmp_path: Path) -> None:
    """A child killed by SIGKILL mid-task: the parent's file shows its last (running) record."""
    script = tmp_path / "doomed.py"
    script.write_text(KILLED_SCRIPT)
    ready = tmp_path / "ready"
    out = tmp_path / "parent.json"
    with Task("parent", file=out) as root:
        proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=child_environment())
        deadline = time.monotonic() + 120  # the start: over 20 s when loaded
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    saved = Task.model_validate_json(out.read_text())
    (doomed,) = saved.subtasks
    assert (doomed.label, doomed.status, doomed.subprocess) == ("doomed", TaskStatus.RUNNING, True)
    assert doomed.parent_id == root.task_id
    assert doomed.step == 1


def test_unsampled_traceparent_still_yields_complete_tree(tmp_path: Path) -> None:
    """A TRACEPARENT with sampled flag 00: `tasktrace run` and its script still form the tree."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.replace("busy(0.3)", "busy(0.01)"))
    out = tmp_path / "run.json"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    env = dict(os.environ, TRACEPARENT=f"00-{trace_id}-00f067aa0ba902b7-00")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tasktrace.cli",
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            str(script),
        ],
        env=env,
        check=True,
        timeout=60,
    )
    run = Task.model_validate_json(out.read_text())
    assert run.trace_id == trace_id
    assert run.parent_id is None
    assert run.status is TaskStatus.FINISHED
    (child,) = run.subtasks
    assert (child.label, child.subprocess, child.trace_id) == ("script", True, trace_id)
    assert [(t.label, t.status) for t in child.subtasks] == [("inner", TaskStatus.FINISHED)]
