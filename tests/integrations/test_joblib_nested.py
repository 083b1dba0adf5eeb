"""joblib: ``Parallel`` calls made inside a worker's task join that task (joblib's nesting).

joblib runs a call made inside a batch with the backend the outer backend's
``get_nested_backend`` names: threads (a ``ThreadingBackend``) one level down, then a
``SequentialBackend``. A tester's loky workers ran their nested calls in plain joblib threads,
which start from an empty context: the inner tasks were lost from the driver's tree and file,
without a warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

joblib = pytest.importorskip("joblib", reason="the joblib integration needs joblib installed")
pytest.importorskip("sklearn", reason="the engine tests' worker module imports scikit-learn")

from joblib import Parallel, delayed  # noqa: E402

import tasktrace.integrations.joblib  # noqa: E402, F401 - registers the "tasktrace" backend
from tasktrace import Task, TaskStatus  # noqa: E402

from . import engine_workers as work  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

INNER = ["loky", "multiprocessing", "threading"]


def _check_inner(outer: Task, prefix: str) -> None:
    """``outer`` holds ``inner {prefix}.0`` and ``.1``: same process, same trace, finished."""
    assert sorted(t.label for t in outer.subtasks) == [f"inner {prefix}.{k}" for k in range(2)]
    for sub in outer.subtasks:
        assert sub.parent_id == outer.task_id
        assert sub.trace_id == outer.trace_id
        assert sub.subprocess is False  # a thread of the outer task's process
        assert sub.status is TaskStatus.FINISHED


@pytest.mark.parametrize("inner", INNER)
def test_a_nested_call_in_a_worker_joins_the_worker_s_task(inner: str, tmp_path: Path) -> None:
    """The tester's case: ``inner i.j`` under ``outer i`` in the driver's file; CPU once.

    In a loky or ``multiprocessing`` worker (and in a thread of the thread backend) joblib
    runs the nested ``Parallel(n_jobs=2)`` in threads of its own.
    """
    out = tmp_path / "top.json"
    with joblib.parallel_config(backend="tasktrace", inner=inner), Task("top", file=out) as top:
        results = Parallel(n_jobs=2)(delayed(work.nested_outer)(i) for i in range(2))
    inner_cpu_s = [sum(r) for r in results]  # each thread's own CPU, by time.thread_time
    saved = Task.model_validate_json(out.read_text())
    for tree in (top, saved):
        outers = sorted(tree.subtasks, key=lambda t: t.label)
        assert [t.label for t in outers] == ["outer 0", "outer 1"]
        assert all(t.subprocess is (inner != "threading") for t in outers)
        for i, outer in enumerate(outers):
            _check_inner(outer, str(i))
            assert outer.cpu_time is not None
            assert outer.cpu_time >= 0.9 * inner_cpu_s[i]  # its process's CPU holds its threads'
        assert tree.cpu_time is not None
        # the inner tasks are in-process subtasks: their CPU is inside their outer task's
        elsewhere = sum(t.cpu_time or 0.0 for t in outers) if inner != "threading" else 0.0
        assert tree.total_cpu() == pytest.approx(tree.cpu_time + elsewhere)


def test_a_call_below_a_sequential_one_in_a_worker_joins_its_task(tmp_path: Path) -> None:
    """``Parallel(n_jobs=1)`` in a worker, a ``Parallel(n_jobs=2)`` in each of its calls.

    The sequential call runs in the worker's own thread (its ``middle`` tasks are under
    ``outer``, as they were before) and passes the backend it runs under on to the calls below
    it (joblib's ``SequentialBackend.get_nested_backend``): those were joblib's plain threads.
    """
    out = tmp_path / "top.json"
    with joblib.parallel_config(backend="tasktrace"), Task("top", file=out) as top:
        Parallel(n_jobs=2)(delayed(work.nested_middle)(i) for i in range(2))
    saved = Task.model_validate_json(out.read_text())
    for tree in (top, saved):
        outers = sorted(tree.subtasks, key=lambda t: t.label)
        assert [t.label for t in outers] == ["outer 0", "outer 1"]
        for i, outer in enumerate(outers):
            middles = sorted(outer.subtasks, key=lambda t: t.label)
            assert [t.label for t in middles] == [f"middle {i}.{j}" for j in range(2)]
            for j, middle in enumerate(middles):
                assert middle.subprocess is False
                _check_inner(middle, f"{i}.{j}")


CUT_OFF = textwrap.dedent(
    """
    import joblib
    from joblib import Parallel, delayed
    import tasktrace.integrations.joblib
    from tasktrace import Task
    from tests.integrations.engine_workers import nested_outer

    joblib.parallel_config(backend="tasktrace")
    with Task("top") as top:
        Parallel(n_jobs=2)(delayed(nested_outer)(i, 2, "threading") for i in range(2))
    print(sorted(len(t.subtasks) for t in top.subtasks))
    """
)


def test_a_task_cut_off_in_a_worker_s_thread_is_warned_about(tmp_path: Path) -> None:
    """``backend="threading"`` named in a worker: plain threads; the cut-off warning says so.

    The worker's carried task runs in its main thread (loky's, like a main thread's top-level
    task in the driver); a thread's task with no parent meanwhile is missing from the driver's
    tree and file, which the warning tells (it said nothing in a worker).
    """
    script = tmp_path / "driver.py"
    script.write_text(CUT_OFF)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    root = Path(__file__).resolve().parents[2]  # the tests, and the tasktrace under test
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root)])
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[0, 0]"  # the named plain threads: the tasks are cut off
    warnings = [line for line in done.stderr.splitlines() if "with no parent" in line]
    assert warnings, done.stderr
    for line in warnings:
        assert "task 'inner " in line
        assert "while task 'outer " in line
        assert "ContextThreadPoolExecutor" in line
