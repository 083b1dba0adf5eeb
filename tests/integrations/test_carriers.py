"""Carriers and delivery (the core functions the engine integrations use), in one process."""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys
import threading
import uuid
import weakref
from pathlib import Path

import pytest
from opentelemetry import context as otel_context

from tasktrace import Task, TaskStatus
from tasktrace.core.context import live_context
from tasktrace.integrations import batching
from tasktrace.integrations.attempts import Attempts
from tasktrace.integrations.batching import Batch, RecordBatcher
from tasktrace.task.carriers import Carrier, RemoteScope, capture, remote_scope, snapshot
from tasktrace.task.propagator import TaskTracePropagator
from tasktrace.task.roots import hand_on_finished
from tasktrace.task.scope_cache import ScopeCache
from tasktrace.tree.delivery import DeliveryReport, RecordInbox, deliver
from tasktrace.tree.processor import tree as task_tree

pytestmark = pytest.mark.timeout(60)


def _remote_record(parent: Task, label: str) -> bytes:
    """Build a finished record as a worker in another process would send it."""
    record = Task.model_construct(
        label=label,
        parent_id=parent.task_id,
        subprocess=True,
        status=TaskStatus.FINISHED,
        start_time=(parent.start_time or 0.0) + 0.001,
        cpu_time=0.25,
        subtasks=[],
    )
    return record.model_dump_json().encode()


def test_carrier_round_trips_through_its_text_form() -> None:
    """capture() inside a task gives a carrier whose headers rebuild it, all keys prefixed."""
    with Task("submitter") as task:
        carrier = capture()
    assert carrier is not None
    assert carrier.parent_task_id == task.task_id
    assert carrier.traceparent is not None
    assert task.span_id is not None
    assert task.span_id in carrier.traceparent
    headers = carrier.to_headers()
    assert all(k.startswith("tasktrace-") for k in headers)
    assert Carrier.from_headers(headers) == carrier
    assert carrier.here
    assert capture() is None  # no task running


def test_bad_carrier_headers_are_refused_naming_the_key() -> None:
    """A malformed parent id or origin is a ValueError naming the header; none is None."""
    assert Carrier.from_headers({}) is None
    with pytest.raises(ValueError, match="tasktrace-parent: not a task id"):
        Carrier.from_headers({"tasktrace-parent": "nope", "tasktrace-origin": "1@h"})
    with pytest.raises(ValueError, match="tasktrace-origin: expected 'pid@host'"):
        Carrier.from_headers({"tasktrace-parent": str(uuid.uuid4()), "tasktrace-origin": "h"})


def test_record_for_a_running_parent_is_attached_and_saved(tmp_path: Path) -> None:
    """A delivered record joins the running parent and is in its file at finish, CPU once."""
    out = tmp_path / "tree.json"
    with Task("driver", file=out) as driver:
        capture()
        report = deliver([_remote_record(driver, "remote")])
    assert (report.attached, report.late) == (1, 0)
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        (remote,) = tree.subtasks
        assert remote.label == "remote"
        assert tree.total_cpu() == pytest.approx((tree.cpu_time or 0.0) + 0.25)


def test_held_records_are_delivered_by_the_finish_of_their_parent(tmp_path: Path) -> None:
    """An inbox's records join the tree when asked, at a task's finish (file too), or when old."""
    inbox = RecordInbox(hold_s=3600.0)
    out = tmp_path / "tree.json"
    with Task("driver", file=out) as driver:
        capture()
        inbox.put([_remote_record(driver, "first")])
        assert driver.subtasks == []  # held, not parsed
        assert inbox.deliver_held().attached == 1
        assert [t.label for t in driver.subtasks] == ["first"]
        inbox.put([_remote_record(driver, "second"), _remote_record(driver, "third")])
    assert [t.label for t in driver.subtasks] == ["first", "second", "third"]
    saved = Task.model_validate_json(out.read_text())
    assert [t.label for t in saved.subtasks] == ["first", "second", "third"]
    inbox.hold_s = 0.0  # the oldest held record is old at the next put: all go
    with Task("driver") as driver:
        capture()
        inbox.put([_remote_record(driver, "a")])
        assert driver.subtasks == []
        inbox.put([_remote_record(driver, "b")])
        assert [t.label for t in driver.subtasks] == ["a", "b"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_holds_none_of_its_parents_records() -> None:
    """A pool worker forked while records are held does not deliver them (its parent does)."""
    inbox = RecordInbox(hold_s=3600.0)
    with Task("driver") as driver:
        capture()
        inbox.put([_remote_record(driver, "held")])
        pid = os.fork()
        if pid == 0:  # the child: nothing held, nothing delivered
            report = inbox.deliver_held()
            os._exit(0 if report == DeliveryReport() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert inbox.deliver_held().attached == 1


def test_late_record_is_attached_and_the_file_rewritten(tmp_path: Path) -> None:
    """A record arriving after its parent finished joins it; the root's file is rewritten."""
    out = tmp_path / "tree.json"
    with Task("root", file=out), Task("stage") as stage:
        capture()
    assert Task.model_validate_json(out.read_text()).subtasks[0].subtasks == []
    report = deliver([_remote_record(stage, "late")])
    assert (report.attached, report.late) == (0, 1)
    saved = Task.model_validate_json(out.read_text())
    assert [t.label for t in saved.subtasks[0].subtasks] == ["late"]


def test_unknown_parent_waits_and_bad_json_is_counted_not_raised() -> None:
    """A record whose parent is unknown waits (counted); bad JSON is dropped (counted)."""
    stranger = Task("elsewhere")
    report = deliver([_remote_record(stranger, "orphan"), b"{not json"])
    assert (report.attached, report.late, report.waiting, report.invalid) == (0, 0, 1, 1)


def test_propagator_carries_the_task_over_a_text_channel() -> None:
    """Inject in the submitter, extract "elsewhere": the task started there is its subtask."""
    propagator = TaskTracePropagator()
    headers: dict[str, str] = {}
    with Task("submitter") as submitter:
        propagator.inject(headers)
    assert headers["tasktrace-parent"] == str(submitter.task_id)
    headers["tasktrace-origin"] = "1@another-node"  # as if extracted on another machine
    token = otel_context.attach(propagator.extract(headers))
    try:
        with Task("remote") as remote:
            pass
    finally:
        otel_context.detach(token)
    assert remote.parent_id == submitter.task_id
    assert remote.subprocess
    assert remote.trace_id == submitter.trace_id
    assert submitter.subtasks == []  # it went to the remote scope, not into this tree


def test_propagator_is_the_tasktrace_entry_point_of_otel_propagators() -> None:
    """OTEL_PROPAGATORS=tracecontext,tasktrace loads tasktrace's propagator by its entry point."""
    script = (
        "from opentelemetry import propagate\n"
        "from tasktrace import Task\n"
        "h = {}\n"
        "with Task('t'):\n"
        "    propagate.inject(h)\n"
        "print(sorted(h))\n"
    )
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,tasktrace"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(
        ["tasktrace-origin", "tasktrace-parent", "tasktrace-traceparent", "traceparent"]
    )


def test_running_snapshot_arriving_after_the_finished_record_is_ignored() -> None:
    """A running snapshot of a task delivered after its finished record does not replace it."""
    with Task("driver") as driver:
        capture()
        finished = Task.model_validate_json(_remote_record(driver, "remote"))
        running = finished.model_copy(update={"status": TaskStatus.RUNNING})
        deliver([finished])
        deliver([running.model_dump_json().encode()])
    (remote,) = driver.subtasks
    assert remote.status is TaskStatus.FINISHED


def test_import_tasktrace_imports_no_engine() -> None:
    """``import tasktrace`` (and a task) imports neither joblib, Ray, Dask nor the integrations."""
    script = (
        "import sys\n"
        "import tasktrace\n"
        "with tasktrace.Task('t'):\n"
        "    pass\n"
        "names = ('joblib', 'ray', 'dask', 'distributed', 'tasktrace.integrations')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in names or n.startswith(names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_remote_scopes_are_freed_when_their_work_is_done() -> None:
    """Remote scopes (one per call) and their finished roots are freed by refcount: no leak."""
    propagator = TaskTracePropagator()
    with Task("submitter"):
        headers: dict[str, str] = {}
        propagator.inject(headers)
    headers["tasktrace-origin"] = "1@another-node"  # as if extracted on another machine
    carrier = Carrier.from_headers(headers)
    assert carrier is not None
    batches: list[Batch] = []
    batcher = RecordBatcher("worker", batches.append, interval_s=3600.0)
    alive: list[weakref.ref[object]] = []
    gc.collect()
    gc.disable()  # freed by reference counting alone, as a busy worker needs
    try:
        for i in range(50):
            token = otel_context.attach(propagator.extract(headers))
            try:
                alive.append(weakref.ref(live_context(otel_context.get_current())[0]))
                with Task(f"call {i}") as task:
                    pass
                alive.append(weakref.ref(task))
            finally:
                otel_context.detach(token)
            with remote_scope(
                carrier, on_started=batcher.started, on_finished=batcher.finished
            ) as scope:
                assert scope is not None
                alive.append(weakref.ref(scope.parent))
                with Task(f"batched call {i}") as task:
                    pass
                alive.append(weakref.ref(task))
            del scope, task
        held = batcher.take_now()  # first: a batch the thread made before it is in batches
        sent = [r for batch in batches for r in batch.records] + held
        left = sum(ref() is not None for ref in alive)
    finally:
        gc.enable()
    assert left <= 2  # at most the last stand-in of each kind, until the next scope is made
    assert len(sent) == 50  # the batched calls' records, none lost


def _carried_elsewhere() -> tuple[Carrier, Carrier]:
    """Capture a finished submitter's carrier, and the same as another node's would arrive."""
    with Task("submitter"):
        carrier = capture()
    assert carrier is not None
    return carrier, dataclasses.replace(carrier, origin_pid=1, origin_host="another-node")


def test_one_cached_scope_serves_many_calls_each_with_its_own_data() -> None:
    """A ScopeCache gives one scope per carrier; each call's roots carry their own call data."""
    carrier, remote = _carried_elsewhere()
    records: list[bytes] = []
    call = {"id": ""}
    scopes = ScopeCache(
        lambda c: RemoteScope(
            c,
            {"node": "n1"},
            on_finished=lambda task: records.append(snapshot(task) or b""),
            call_data=lambda: {"call": call["id"]},
        )
    )
    for i in range(3):
        call["id"] = f"call-{i}"
        with remote_scope(remote, scope=scopes.get(remote)) as scope:
            assert scope is scopes.get(remote)
            with Task(f"work {i}"):
                pass
    hand_on_finished()  # as a record batcher does before each batch
    parsed = [Task.model_validate_json(r) for r in records]
    assert [(t.label, t.model_extra) for t in parsed] == [
        (f"work {i}", {"node": "n1", "call": f"call-{i}"}) for i in range(3)
    ]
    assert {t.parent_id for t in parsed} == {carrier.parent_task_id}


def test_carried_roots_get_no_writer_entry_and_their_records_still_come_home() -> None:
    """A carried root has no tree-writer entry of its own; kept and handed-on records arrive."""
    _, remote = _carried_elsewhere()
    handed: list[Task] = []
    started: list[Task] = []
    kept = RemoteScope(remote)
    handing = RemoteScope(
        remote, {"node": "n1"}, on_started=started.append, on_finished=handed.append
    )
    for scope in (kept, handing):
        with remote_scope(remote, scope=scope), Task("root") as root:
            assert root.subprocess
            assert task_tree.files.targets(root) is None  # no per-root lock, weakref, lookups
    assert [Task.model_validate_json(r).label for r in kept.take()] == ["root"]
    assert handed == []  # collected when a batch is made, not at the root's finish
    assert [t.model_extra for t in started] == [{"node": "n1"}]  # set before the user's code
    hand_on_finished()
    assert [(t.label, t.status, t.model_extra) for t in handed] == [
        ("root", TaskStatus.FINISHED, {"node": "n1"})
    ]
    assert handing.running_roots() == []


def test_handed_on_roots_survive_their_scope_being_let_go() -> None:
    """A scope dropped (by its cache) before its roots were collected still hands them on."""
    _, remote = _carried_elsewhere()
    handed: list[str] = []
    for i in range(3):
        with remote_scope(remote, on_finished=lambda t: handed.append(t.label)), Task(f"root {i}"):
            pass
    gc.collect()
    hand_on_finished()
    assert sorted(handed) == ["root 0", "root 1", "root 2"]


def test_driver_keeps_no_record_once_its_tree_is_let_go() -> None:
    """Records sorted into attempts and delivered are freed with their tree: no driver leak."""
    attempts = Attempts("work_id", "worker_id", "Engine")
    alive: list[weakref.ref[object]] = []
    gc.collect()
    gc.disable()  # freed by reference counting alone
    try:
        for round_ in range(20):
            with Task(f"round {round_}") as driver:
                capture()
                records = []
                for i in range(10):
                    record = Task.model_validate_json(_remote_record(driver, f"call {i}"))
                    record.work_id = f"work-{round_}-{i}"  # type: ignore[attr-defined]
                    record.worker_id = "worker-1"  # type: ignore[attr-defined]
                    records.append(record)
                    alive.append(weakref.ref(record))
                deliver(attempts.sort_out(records))
            assert len(driver.subtasks) == 10
            del driver, records, record
        left = sum(ref() is not None for ref in alive)
    finally:
        gc.enable()
    assert left == 0


_EXIT_DURING_SEND = """
import sys, time
from pathlib import Path
from tasktrace import Task
from tasktrace.integrations.batching import RecordBatcher

marks = Path(sys.argv[1])

def send(batch):
    marks.write_text("send started\\n")
    time.sleep(0.5)
    with marks.open("a") as f:
        f.write(f"send done {len(batch.records)}\\n")

batcher = RecordBatcher("w1", send)
batcher.finished(Task("root"))  # the thread sends the first batch at once
while not marks.exists():
    time.sleep(0.01)
"""


def test_exit_waits_for_a_batch_being_sent(tmp_path: Path) -> None:
    """A worker that exits while its batcher sends lets the send finish, and exits 0.

    A daemon thread cut off inside pydantic's serialiser or an engine's C++ client aborts the
    process ("FATAL: exception not rethrown").
    """
    marks = tmp_path / "marks"
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_DURING_SEND)
    run = subprocess.run(
        [sys.executable, str(script), str(marks)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert marks.read_text().splitlines() == ["send started", "send done 1"]


@pytest.mark.parametrize("gone_first", [True, False], ids=["gone-first", "retry-first"])
def test_a_lost_attempt_gets_the_retry_error_whichever_is_seen_first(gone_first: bool) -> None:
    """The driver's "worker gone" and the retry's "run again" agree on the lost attempt's error.

    A Ray or Dask driver may fail a running record because its worker was taken for gone
    before or after it sees the same work run again on another worker; the error must not
    depend on that race (a CI run saw Ray's "gone" text where the retry's was due).
    """
    gone_error = "Engine worker gone: its process ended"
    attempts = Attempts("work_id", "worker_id", "Engine", (gone_error,))
    with Task("driver") as driver:
        capture()

        def attempt(worker: str, status: TaskStatus) -> Task:
            record = Task.model_validate_json(_remote_record(driver, "fragile"))
            record.status = status
            record.work_id = "work-1"  # type: ignore[attr-defined]
            record.worker_id = worker  # type: ignore[attr-defined]
            return record

        first = attempt("worker-1", TaskStatus.RUNNING)
        deliver(attempts.sort_out([first]))
        if gone_first:
            first.status, first.error = TaskStatus.FAILED, gone_error
        deliver(attempts.sort_out([attempt("worker-2", TaskStatus.FINISHED)]))
    fragile = sorted(driver.subtasks, key=lambda t: t.model_extra["attempt"])
    assert [(t.model_extra["attempt"], t.status) for t in fragile] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FINISHED),
    ]
    assert fragile[0].error == "Engine worker lost: attempt 1 of work-1 was run again as attempt 2"


def test_attempts_are_numbered_in_start_order_on_any_worker_in_any_arrival_order() -> None:
    """Three runs of one work (workers 1, 2, 1), arriving out of order: attempts 1, 2, 3.

    Before: attempts were numbered by the distinct workers in the order seen (a Dask key that
    raised twice, with ``retries=2``, came out 1, 2, 1); a raised attempt keeps its error.
    """
    attempts = Attempts("work_id", "worker_id", "Engine", call_key="call_id")
    with Task("driver") as driver:
        capture()

        def run(worker: str, call: str, delay_s: float, error: str | None) -> Task:
            record = Task.model_validate_json(_remote_record(driver, "flaky"))
            record.start_time = (driver.start_time or 0.0) + delay_s
            record.status = TaskStatus.FAILED if error else TaskStatus.FINISHED
            record.error = error
            record.work_id = "work-1"  # type: ignore[attr-defined]
            record.worker_id = worker  # type: ignore[attr-defined]
            record.call_id = call  # type: ignore[attr-defined]
            return record

        first = run("worker-1", "1-1", 0.1, "RuntimeError: flake 0")
        second = run("worker-2", "2-1", 0.2, "RuntimeError: flake 1")
        third = run("worker-1", "1-2", 0.3, None)
        deliver(attempts.sort_out([third]))
        deliver(attempts.sort_out([first]))
        deliver(attempts.sort_out([second]))
    flaky = sorted(driver.subtasks, key=lambda t: t.start_time or 0.0)
    assert [(t.model_extra["attempt"], t.status, t.error) for t in flaky] == [
        (1, TaskStatus.FAILED, "RuntimeError: flake 0"),
        (2, TaskStatus.FAILED, "RuntimeError: flake 1"),
        (3, TaskStatus.FINISHED, None),
    ]


def test_a_work_id_run_under_two_parents_is_two_works_not_attempts() -> None:
    """A Dask key that two tasks submit in turn runs once for each: no attempt numbers."""
    attempts = Attempts("work_id", "worker_id", "Engine", call_key="call_id")
    runs = []
    for i in range(2):
        with Task(f"driver {i}") as driver:
            capture()
            record = Task.model_validate_json(_remote_record(driver, "square"))
            record.work_id = "square-1"  # type: ignore[attr-defined]
            record.worker_id = "worker-1"  # type: ignore[attr-defined]
            record.call_id = f"1-{i}"  # type: ignore[attr-defined]
            deliver(attempts.sort_out([record]))
        runs.extend(driver.subtasks)
    assert [(t.status, "attempt" in t.model_extra) for t in runs] == [
        (TaskStatus.FINISHED, False),
        (TaskStatus.FINISHED, False),
    ]


@pytest.mark.parametrize("path", ["teardown flush", "batcher thread"])
def test_a_batch_holds_no_record_whose_span_was_not_flushed_first(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root finishing while the worker flushes its spans waits for the next batch.

    Before: the batch was taken after the flush and collected that root too, so its record
    went home with its span still queued; a worker killed then lost the span for good (a Ray
    CI run missed 4 spans of a trace whose records had all arrived).
    """
    _, remote = _carried_elsewhere()
    batches: list[Batch] = []
    sent = threading.Event()

    def send(batch: Batch) -> None:
        if batch.records:  # the thread's first, busy-mark batch may come before any record
            batches.append(batch)
            sent.set()

    batcher = RecordBatcher("worker", send, interval_s=3600.0)
    finished: list[str] = []  # labels of the roots finished so far
    flushed: list[set[str]] = []  # at each flush: the roots whose spans it covered

    def run_root(label: str) -> None:
        scope = remote_scope(remote, on_started=batcher.started, on_finished=batcher.finished)
        with scope, Task(label):
            pass
        finished.append(label)

    def flush_spans() -> bool:
        flushed.append(set(finished))
        if len(flushed) == 1:
            run_root("finished during the flush")  # as another thread's root would
        return True

    monkeypatch.setattr(batching, "flush_spans", flush_spans)
    if path == "batcher thread":
        run_root("first")  # wakes the batcher's thread: its first batch goes at once
        assert sent.wait(30)
    else:
        with remote_scope(remote, on_finished=batcher.finished), Task("first"):
            pass
        finished.append("first")
        batcher.flush()
    first = {Task.model_validate_json(r).label for r in batches[0].records}
    assert first == {"first"}
    assert first <= flushed[0]
    batcher.flush()  # the one left behind goes with the next batch, after its own flush
    later = {Task.model_validate_json(r).label for b in batches[1:] for r in b.records}
    assert later == {"finished during the flush"}
    assert later <= flushed[-1]
