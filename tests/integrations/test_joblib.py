"""joblib: work in loky / multiprocessing / thread workers joins the submitting task's tree."""

from __future__ import annotations

import functools
import logging
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pydantic
import pytest

joblib = pytest.importorskip("joblib", reason="the joblib integration needs joblib installed")
sklearn = pytest.importorskip("sklearn", reason="the scikit-learn case needs scikit-learn")

from joblib import Parallel, delayed  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402

from tasktrace import Task, TaskStatus  # noqa: E402
from tasktrace.core.warn import reset_warnings  # noqa: E402
from tasktrace.integrations import joblib as tt_joblib  # noqa: E402

from ..otlp_receivers import OtlpHttpReceiver  # noqa: E402
from . import engine_workers as work  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROCESS_BACKENDS = ["loky", "multiprocessing"]


def _check_tree(root: Task, labels: set[str], *, subprocess: bool) -> None:
    assert {t.label for t in root.subtasks} == labels
    for sub in root.subtasks:
        assert sub.parent_id == root.task_id
        assert sub.trace_id == root.trace_id
        assert sub.subprocess is subprocess
        assert sub.status is TaskStatus.FINISHED


def test_a_carried_batch_travels_with_its_carrier_as_text() -> None:
    """The carrier is pickled as its headers (loky's reducer took the dataclass apart: 2x cost).

    Unpickled twice, the batches share one carrier object: one remote scope per submitting
    task in a worker.
    """
    from joblib.externals.loky.backend.reduction import dumps

    from tasktrace.task.carriers import capture

    with Task("submit"):
        carrier = capture()
    assert carrier is not None
    data = bytes(
        dumps(tt_joblib.CarriedBatch(functools.partial(work.plain, 3), carrier, True, "/m/0"))
    )
    assert b"Carrier" not in data
    first, second = pickle.loads(data), pickle.loads(data)
    assert first.carrier == carrier
    assert second.carrier is first.carrier
    assert (first.reused, first.mark, first.batch.args) == (True, "/m/0", (3,))


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_process_workers_join_the_tree_with_cpu_counted_once(inner: str, tmp_path: Path) -> None:
    """Loky / multiprocessing: 4 worker tasks under `cv`, in file and memory, CPU within 10%."""
    out = tmp_path / "cv.json"
    with joblib.parallel_config(backend="tasktrace", inner=inner), Task("cv", file=out) as cv:
        results = Parallel(n_jobs=2)(delayed(work.fold)(i) for i in range(4))
    measured_s = sum(r["cpu_s"] for r in results)  # psutil in the workers, around each task
    saved = Task.model_validate_json(out.read_text())
    for tree in (cv, saved):
        _check_tree(tree, {f"fold {i}" for i in range(4)}, subprocess=True)
        worker_cpu_s = sum(t.cpu_time or 0.0 for t in tree.subtasks)
        assert worker_cpu_s == pytest.approx(measured_s, rel=0.10)
        assert tree.cpu_time is not None
        assert tree.cpu_time < 0.5 * worker_cpu_s  # the driver's own CPU excludes the workers'
        assert tree.total_cpu() == pytest.approx(tree.cpu_time + worker_cpu_s)
    assert {r["pid"] for r in results}.isdisjoint({__import__("os").getpid()})


def test_thread_workers_join_the_tree_in_process(tmp_path: Path) -> None:
    """threading: worker tasks are plain subtasks (same process), CPU counted once in `cv`."""
    out = tmp_path / "cv.json"
    with joblib.parallel_config(backend="tasktrace", inner="threading"), Task("cv", file=out) as cv:
        results = Parallel(n_jobs=2)(delayed(work.fold)(i) for i in range(4))
    threads_cpu_s = sum(r["thread_cpu_s"] for r in results)
    saved = Task.model_validate_json(out.read_text())
    for tree in (cv, saved):
        _check_tree(tree, {f"fold {i}" for i in range(4)}, subprocess=False)
        # a task's cpu_time is its process's (all threads): the parent holds the threads' CPU
        assert tree.cpu_time == pytest.approx(threads_cpu_s, rel=0.10)
        assert tree.total_cpu() == tree.cpu_time


def test_scikit_learn_n_jobs_records_a_subtree(tmp_path: Path) -> None:
    """cross_val_score(n_jobs=2) under a task: each fold's Task-wrapped `fit` is a subtask."""
    X, y = load_iris(return_X_y=True)
    out = tmp_path / "cv.json"
    with joblib.parallel_config(backend="tasktrace"), Task("cross-validate", file=out) as cv:
        scores = cross_val_score(work.TracedLogisticRegression(max_iter=500), X, y, cv=5, n_jobs=2)
    assert len(scores) == 5
    saved = Task.model_validate_json(out.read_text())
    for tree in (cv, saved):
        fits = [t for t in tree.subtasks if t.label == "fit"]
        assert len(fits) == 5
        assert all(t.subprocess and t.trace_id == tree.trace_id for t in fits)
        assert sorted(t.model_extra["n_samples"] for t in fits) == [120] * 5


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_failing_worker_task_is_failed_and_the_error_reaches_the_driver(inner: str) -> None:
    """A worker task raising is `failed` with its error in the driver's tree; joblib re-raises."""
    with (
        joblib.parallel_config(backend="tasktrace", inner=inner),
        Task("driver") as driver,
        pytest.raises(ValueError, match="fold 1 is odd"),
    ):
        Parallel(n_jobs=2, batch_size=1)(delayed(work.failing_fold)(i) for i in range(2))
    failed = [t for t in driver.subtasks if t.status is TaskStatus.FAILED]
    assert [t.label for t in failed] == ["fold 1"]
    assert failed[0].error == "ValueError: fold 1 is odd"


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_a_failing_batch_keeps_its_records_whatever_its_exception_pickles(
    inner: str, tmp_path: Path
) -> None:
    """A batch raising pydantic's ValidationError (pickled without `__dict__`): both its tasks.

    The batch [0, 1] fails at fold 1; fold 0 finished before it (the other batch, [2, 3], may
    be killed by joblib's abort). joblib re-raises the same exception type, with the worker's
    traceback as its cause.
    """
    out = tmp_path / "cv.json"
    values = [0, "one", 2, 3]
    with (
        joblib.parallel_config(backend="tasktrace", inner=inner),
        Task("cv", file=out) as cv,
        pytest.raises(pydantic.ValidationError) as raised,
    ):
        Parallel(n_jobs=2, batch_size=2, pre_dispatch="all")(
            delayed(work.fold_validating)(i, value) for i, value in enumerate(values)
        )
    assert "fold_validating" in str(raised.value.__cause__)  # the worker's traceback
    saved = Task.model_validate_json(out.read_text())
    for tree in (cv, saved):
        by_label = {t.label: t for t in tree.subtasks}
        assert {"fold 0", "fold 1"} <= set(by_label) <= {f"fold {i}" for i in range(4)}
        failed = by_label.pop("fold 1")
        assert failed.status is TaskStatus.FAILED
        assert (failed.error or "").startswith("ValidationError: ")
        assert all(t.status is TaskStatus.FINISHED for t in by_label.values())
        assert all(t.subprocess and t.parent_id == cv.task_id for t in tree.subtasks)


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_a_batch_ending_just_after_another_failed_keeps_its_records(
    inner: str, tmp_path: Path
) -> None:
    """Fold 1 ends 0.1 s after fold 0 failed: joblib's abort waits for it, it is in the tree.

    Fold 0 fails once fold 1 has started (a marker file); joblib sees the error within a few
    tens of milliseconds and stops the workers, after the traced backend gave the batches
    still out ``ABORT_GRACE_S`` (0.25 s) to come home.
    """
    marker = str(tmp_path / "fold 1 started")
    with (
        joblib.parallel_config(backend="tasktrace", inner=inner),
        Task("cv") as cv,
        pytest.raises(ValueError, match="fold 0 failed"),
    ):
        Parallel(n_jobs=2, batch_size=1, pre_dispatch="all")(
            [
                delayed(work.fold_sleeping)(0, 0.0, True, wait_for=marker),
                delayed(work.fold_sleeping)(1, 0.1, False, touch=marker),
            ]
        )
    assert {t.label: t.status for t in cv.subtasks} == {
        "fold 0": TaskStatus.FAILED,
        "fold 1": TaskStatus.FINISHED,
    }


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_a_batch_still_running_when_joblib_kills_it_is_warned_about(
    inner: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Fold 1 runs for 5 s after fold 0 failed: joblib kills it, and a warning says so.

    Fold 0 fails once fold 1 has started (a marker file): a batch not started when the call
    fails is not run at all, and loses nothing.
    """
    reset_warnings()  # said once per process: the other backend's case may have said it
    marker = str(tmp_path / "fold 1 started")
    with (
        caplog.at_level(logging.WARNING, logger="tasktrace.integrations.joblib"),
        joblib.parallel_config(backend="tasktrace", inner=inner),
        Task("cv") as cv,
        pytest.raises(ValueError, match="fold 0 failed"),
    ):
        Parallel(n_jobs=2, batch_size=1)(
            [
                delayed(work.fold_sleeping)(0, 0.0, True, wait_for=marker),
                delayed(work.fold_sleeping)(1, 5.0, False, touch=marker),
            ]
        )
    assert [t.label for t in cv.subtasks] == ["fold 0"]
    warnings = [r.getMessage() for r in caplog.records if "joblib" in r.getMessage()]
    assert any("1 batch" in m and "lost" in m for m in warnings), warnings


def _labels_within(task: Task, wanted: set[str], timeout_s: float) -> set[str]:
    """Wait until ``task``'s subtasks include ``wanted`` (labels); return the labels seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {t.label for t in list(task.subtasks)}
        if wanted <= seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


def test_batches_ending_after_another_batch_failed_keep_their_records(tmp_path: Path) -> None:
    """Batches ending after a batch of the call failed are in the tree and file, failed or not.

    joblib stops retrieving results once a batch failed (the call is aborting); the records
    must come home anyway. In steps: batch [0, 1] fails; once its records are in `cv`, the
    other batches may end: [2, 3] fails too, [4, 5] finishes. The test holds joblib's calling
    thread (``return_as="generator"``) until then, so joblib kills no worker before they end.
    loky only: joblib's ``multiprocessing`` backend has no generator mode, so its calling
    thread would kill the workers within 10 ms of the first error, too soon to arrange.
    """
    go = tmp_path / "go"
    out = tmp_path / "cv.json"
    calls = [(0, False), (1, True), (2, False), (3, True), (4, False), (5, False)]
    labels = {f"fold {i}" for i, _ in calls}
    with joblib.parallel_config(backend="tasktrace"), Task("cv", file=out) as cv:
        results = Parallel(n_jobs=2, batch_size=2, pre_dispatch="all", return_as="generator")(
            delayed(work.fold_after)(i, fail, None if i < 2 else str(go)) for i, fail in calls
        )
        assert _labels_within(cv, {"fold 0", "fold 1"}, timeout_s=60) >= {"fold 0", "fold 1"}
        go.touch()
        seen = _labels_within(cv, labels, timeout_s=10)
        with pytest.raises(ValueError, match="fold 1 failed"):
            list(results)
    assert seen == labels
    saved = Task.model_validate_json(out.read_text())
    for tree in (cv, saved):
        assert {t.label for t in tree.subtasks} == labels
        for sub in tree.subtasks:
            assert sub.parent_id == cv.task_id
            assert sub.subprocess is True
            failed = sub.label in ("fold 1", "fold 3")
            assert sub.status is (TaskStatus.FAILED if failed else TaskStatus.FINISHED)
            assert sub.error == (f"ValueError: {sub.label} failed" if failed else None)


@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_many_batches_in_reused_workers_go_to_their_own_submitting_task(inner: str) -> None:
    """Workers reused across batches and Parallel calls: each call's tasks under its submitter."""
    with joblib.parallel_config(backend="tasktrace", inner=inner):
        with Task("first") as first:
            assert Parallel(n_jobs=2, batch_size=1)(
                delayed(work.square_in_task)(i) for i in range(40)
            ) == [i * i for i in range(40)]
        with Task("second") as second:
            Parallel(n_jobs=2, batch_size=3)(delayed(work.square_in_task)(i) for i in range(40, 70))
    for root, calls in ((first, range(40)), (second, range(40, 70))):
        assert sorted(t.label for t in root.subtasks) == sorted(f"square {i}" for i in calls)
        for sub in root.subtasks:
            assert sub.parent_id == root.task_id
            assert sub.trace_id == root.trace_id
            assert sub.subprocess is True


def test_no_running_task_behaves_as_without_tasktrace() -> None:
    """Work submitted with no task running returns its results and delivers nothing."""
    with joblib.parallel_config(backend="tasktrace"):
        assert Parallel(n_jobs=2)(delayed(work.plain)(i) for i in range(6)) == [
            i * i for i in range(6)
        ]
    assert Task.current() is None


def test_instrument_traces_backends_named_explicitly(tmp_path: Path) -> None:
    """instrument(): Parallel(backend='threading') and the default backend carry the task."""
    tt_joblib.instrument()
    try:
        with Task("explicit") as root:
            Parallel(n_jobs=2, backend="threading")(delayed(work.fold)(i, 0.01) for i in range(2))
            Parallel(n_jobs=2)(delayed(work.fold)(i, 0.01) for i in range(2, 4))
    finally:
        joblib.register_parallel_backend("threading", tt_joblib.ThreadingBackend)
        joblib.register_parallel_backend("loky", tt_joblib.LokyBackend)
        joblib.register_parallel_backend("multiprocessing", tt_joblib.MultiprocessingBackend)
    assert sorted(t.label for t in root.subtasks) == [f"fold {i}" for i in range(4)]
    assert [t.subprocess for t in sorted(root.subtasks, key=lambda t: t.label)] == [
        False,
        False,
        True,
        True,
    ]


def test_inner_backend_name_is_checked() -> None:
    """An unknown inner backend is refused with a message naming the allowed ones."""
    with pytest.raises(ValueError, match=r"inner must be one of \['loky', 'multiprocessing'"):
        tt_joblib.tasktrace_backend(inner="dask")


DRIVER = textwrap.dedent(
    """
    import sys
    import joblib
    from joblib import Parallel, delayed
    import tasktrace
    import tasktrace.integrations.joblib
    from tasktrace import Task
    from tests.integrations.engine_workers import fold

    tasktrace.configure(endpoint=sys.argv[1], headers={"authorization": "Bearer s3cret"})
    joblib.parallel_config(backend="tasktrace")
    with Task("cv", file="cv.json"):
        Parallel(n_jobs=2)(delayed(fold)(i, 0.05) for i in range(4))
    """
)


def test_driver_and_workers_export_one_trace(tmp_path: Path) -> None:
    """configure(endpoint, headers) in the driver only: loky workers' spans join its one trace."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_EXPORTER")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer s3cret"}) as receiver:
        subprocess.run(
            [sys.executable, str(script), receiver.endpoint],
            cwd=tmp_path,
            env=env,
            check=True,
            timeout=120,
        )
        spans = receiver.wait_for(5, timeout_s=30)
    (root,) = [s for s in spans if s.name == "cv"]
    folds = [s for s in spans if s.name.startswith("fold ")]
    assert len(folds) == 4
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert {s.parent_span_id for s in folds} == {root.span_id}
    saved = Task.model_validate_json((tmp_path / "cv.json").read_text())
    assert {t.span_id for t in saved.subtasks} == {s.span_id for s in folds}
    assert "s3cret" not in (tmp_path / "cv.json").read_text()
    assert all("s3cret" not in repr(s.attributes) for s in spans)


MANY_BATCHES = textwrap.dedent(
    """
    import sys
    import joblib
    from joblib import Parallel, delayed
    import tasktrace
    import tasktrace.integrations.joblib
    from tasktrace import Task
    from tests.integrations.engine_workers import square_in_task

    tasktrace.configure(endpoint=sys.argv[1])
    joblib.parallel_config(backend="tasktrace")
    with Task("round"):
        Parallel(n_jobs=2, batch_size=1)(delayed(square_in_task)(i) for i in range(100))
    """
)


def test_loky_workers_do_not_export_after_every_batch(tmp_path: Path) -> None:
    """100 one-call batches: every span arrives, in a few export requests, not one per batch.

    A loky worker flushes its spans after a batch only when its last flush is
    ``FLUSH_EVERY_S`` (1 s) old (each flush waits for an OTLP/HTTP round trip); the batch
    processor and the worker's exit handler export the rest.
    """
    script = tmp_path / "driver.py"
    script.write_text(MANY_BATCHES)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with OtlpHttpReceiver() as receiver:
        subprocess.run(
            [sys.executable, str(script), receiver.endpoint], env=env, check=True, timeout=120
        )
        spans = receiver.wait_for(101, timeout_s=30)
        requests = len(receiver.trace_requests())
    assert sorted(s.name for s in spans if s.name != "round") == sorted(
        f"square {i}" for i in range(100)
    )
    assert requests <= 30, requests  # a flush after every batch made about 100
