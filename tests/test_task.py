"""The Task façade: seed API, life cycle, statuses, files, and the span ⇄ task tree."""

from __future__ import annotations

import datetime
import json
import pickle
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode
from pydantic import PrivateAttr

from tasktrace import Task, TaskStatus
from tasktrace.core import attributes as attr
from tasktrace.export.provider import reset_tracing
from tasktrace.testing import InMemorySpanExporter

from .export_helpers import is_microsecond_rounding


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_nested_tasks_form_one_trace(task_spans: InMemorySpanExporter) -> None:
    """Nested tasks are one trace whose parent links equal the task tree."""
    with Task("root") as root:
        with Task("a") as a, Task("a1") as a1:
            pass
        with Task("b") as b:
            pass
    spans = _by_name(task_spans.get_finished_spans())
    assert set(spans) == {"root", "a", "a1", "b"}
    assert {s.context.trace_id for s in spans.values()} == {spans["root"].context.trace_id}
    assert spans["root"].parent is None
    for child, parent in ((a, root), (a1, a), (b, root)):
        span = spans[child.label]
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == parent.span_id
        assert child.parent_id == parent.task_id
        assert span.attributes[attr.PARENT_ID] == str(parent.task_id)
    assert [s.label for s in root.subtasks] == ["a", "b"]
    assert [s.label for s in a.subtasks] == ["a1"]
    assert root.trace_id == format(spans["root"].context.trace_id, "032x")


def test_a_task_span_starts_with_its_data_only_and_ends_with_its_identity(
    task_spans: InMemorySpanExporter,
) -> None:
    """A processor's on_start sees a task span's extra data only; the identity comes at finish."""
    seen: dict[str, dict[str, object]] = {}

    class Recorder(SpanProcessor):
        active = True

        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            if Recorder.active:
                seen[span.name] = dict(span.attributes or {})

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(Recorder())  # the SDK cannot remove it: it goes inert below
    try:
        with Task("root") as root, Task("child", epoch=3) as child:
            pass
    finally:
        Recorder.active = False
    assert seen == {"root": {}, "child": {"tasktrace.data.epoch": 3}}
    spans = _by_name(task_spans.get_finished_spans())
    assert spans["child"].attributes is not None
    assert dict(spans["child"].attributes) == {
        attr.TASK_ID: str(child.task_id),
        attr.PARENT_ID: str(root.task_id),
        attr.STATUS: "finished",
        attr.DURATION_S: spans["child"].attributes[attr.DURATION_S],
        attr.CPU_TIME_S: spans["child"].attributes[attr.CPU_TIME_S],
        attr.PEAK_MEMORY_BYTES: child.peak_memory,
        "tasktrace.data.epoch": 3,
    }
    assert [s.label for s in root.subtasks] == ["child"]  # the tree knows the span is a task


def test_a_rarely_set_field_set_by_hand_reaches_the_span(task_spans: InMemorySpanExporter) -> None:
    """Energy set by hand on a Task("label") (no meter ran) is a span attribute, as measured."""
    with Task("root"), Task("plain"), Task("by hand") as t:
        t.cpu_power = 12.5
        t.children_cpu_time_s = 0.25
    spans = _by_name(task_spans.get_finished_spans())
    a = spans["by hand"].attributes
    assert a is not None
    assert (a[attr.CPU_ENERGY_J], a[attr.CHILDREN_CPU_TIME_S]) == (12.5, 0.25)
    assert not {k for k in spans["plain"].attributes or {} if "energy" in k or "children" in k}


def test_span_attributes_equal_task_fields(task_spans: InMemorySpanExporter) -> None:
    """Each span carries the task's measurements (times to 1 µs) and data; mapping back agrees."""
    with Task("work", tags=["train", "x"], epoch=3, config={"lr": 0.1}) as t:
        sum(range(100_000))
    (span,) = task_spans.get_finished_spans()
    a = span.attributes
    assert a[attr.TASK_ID] == str(t.task_id)
    assert a[attr.STATUS] == "finished"
    assert is_microsecond_rounding(a[attr.DURATION_S], t.duration)
    assert is_microsecond_rounding(a[attr.CPU_TIME_S], t.cpu_time)
    assert a[attr.PEAK_MEMORY_BYTES] == t.peak_memory
    assert a["tasktrace.data.tags"] == ("train", "x")
    assert a["tasktrace.data.epoch"] == 3
    assert a["tasktrace.data_json.config"] == '{"lr":0.1}'
    fields = attr.attributes_to_fields(a)
    assert fields["tags"] == ["train", "x"]
    assert fields["config"] == {"lr": 0.1}
    assert is_microsecond_rounding(fields["duration"], t.duration)
    assert (
        span.start_time == round(t.start_time * 1e9)
        or abs(span.start_time - t.start_time * 1e9) < 1e3
    )
    assert span.status.status_code is StatusCode.OK


def test_failed_task_status_and_exception_event(task_spans: InMemorySpanExporter) -> None:
    """An exception gives FAILED, an ERROR span with an exception event, and propagates as is."""
    err = ValueError("bad value")
    with pytest.raises(ValueError, match="bad value") as info, Task("outer") as outer:  # noqa: PT012 - raised through the tree
        with Task("inner ok"):
            pass
        with Task("inner bad"):
            raise err
    assert info.value is err
    assert outer.status is TaskStatus.FAILED
    assert [(s.label, s.status) for s in outer.subtasks] == [
        ("inner ok", TaskStatus.FINISHED),
        ("inner bad", TaskStatus.FAILED),
    ]
    spans = _by_name(task_spans.get_finished_spans())
    bad = spans["inner bad"]
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "ValueError: bad value"
    assert [e.name for e in bad.events] == ["exception"]
    assert bad.events[0].attributes["exception.type"] == "ValueError"
    assert spans["inner ok"].status.status_code is StatusCode.OK
    assert spans["outer"].attributes[attr.STATUS] == "failed"


def test_keyboard_interrupt_cancels() -> None:
    """KeyboardInterrupt gives CANCELLED and is re-raised."""
    with pytest.raises(KeyboardInterrupt), Task("c") as t:
        raise KeyboardInterrupt
    assert t.status is TaskStatus.CANCELLED
    assert t.duration is not None


def test_current_and_root() -> None:
    """current() is the innermost active task and root() the top of its tree."""
    assert Task.current() is None
    with Task("r") as r:
        with Task("c") as c:
            assert Task.current() is c
            assert Task.root() is r
        assert Task.current() is r
    assert Task.current() is None
    assert Task.root() is None


def test_explicit_parent_task_and_uuid(task_spans: InMemorySpanExporter) -> None:
    """``parent=`` accepts a Task or a running task's UUID, overriding the current task."""
    with Task("p1") as p1, Task("p2"):
        with Task("by task", parent=p1) as bt:
            pass
        with Task("by id", parent=p1.task_id) as bi:
            pass
    assert bt.parent_id == p1.task_id
    assert bi.parent_id == p1.task_id
    assert [s.label for s in p1.subtasks] == ["p2", "by task", "by id"]
    spans = _by_name(task_spans.get_finished_spans())
    assert spans["by id"].parent.span_id == spans["p1"].context.span_id


def test_unknown_parent_uuid_kept() -> None:
    """A parent UUID from elsewhere (another process) is kept as parent_id."""
    other = uuid.uuid4()
    with Task("child", parent=other) as t:
        pass
    assert t.parent_id == other


def test_bad_parent_is_type_error() -> None:
    """A parent that is neither a Task nor a UUID is rejected, naming the type."""
    with pytest.raises(TypeError, match="parent must be a Task or a UUID, not str"):
        Task("x", parent="nope")  # type: ignore[arg-type]


def test_unserialisable_data_is_type_error() -> None:
    """Extra data that JSON cannot encode is a TypeError at construction naming the key."""
    with pytest.raises(TypeError, match="'callback'"):
        Task("x", callback=lambda: None)


def test_data_set_during_task_reaches_span(task_spans: InMemorySpanExporter) -> None:
    """Extra data set on a running task is written to the span at finish."""
    with Task("x") as t:
        t.loss = 0.25
    (span,) = task_spans.get_finished_spans()
    assert span.attributes["tasktrace.data.loss"] == 0.25
    assert t.model_dump()["loss"] == 0.25


def test_pickle_round_trip() -> None:
    """A task pickles (through __reduce__) with its data and extra fields."""
    with Task("x", tags=["a"]) as t:
        pass
    copy = pickle.loads(pickle.dumps(t))
    assert copy.model_dump() == t.model_dump()


class _NotedTask(Task):
    _note: str = PrivateAttr(default="a note")


def test_a_task_read_from_a_file_has_its_own_private_state(tmp_path: Path) -> None:
    """A validated task (a file, model_validate) gets fresh private state, and can be run.

    Task sets it itself (pydantic's generic initialisation cost ~2 µs a task of a large
    file); a user's subclass with private attributes of its own still gets their defaults.
    """
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"label": "root", "subtasks": [{"label": "a"}, {"label": "b"}]}))
    root = Task.model_validate_json(path.read_bytes())
    privates = [root.__pydantic_private__, *(t.__pydantic_private__ for t in root.subtasks)]
    assert privates == [{"_rt": None}] * 3
    assert len({id(p) for p in privates}) == 3  # each its own: a runtime is written into it
    noted = _NotedTask.model_validate({"label": "noted"})
    assert noted._note == "a note"
    assert noted.__pydantic_private__ == {"_rt": None, "_note": "a note"}
    for task in (root.subtasks[0], noted):
        with task:
            pass
        assert task.status is TaskStatus.FINISHED
    assert root.subtasks[1].status is TaskStatus.PENDING


def test_start_twice_is_error() -> None:
    """Starting a started task is a RuntimeError naming the task."""
    with Task("once") as t, pytest.raises(RuntimeError, match="'once' was already started"):
        t.start()


def test_finish_explicitly_with_status() -> None:
    """start() and finish(status) work without a with block."""
    t = Task("manual")
    t.start()
    assert Task.current() is t
    t.finish(TaskStatus.CANCELLED)
    assert t.status is TaskStatus.CANCELLED
    assert Task.current() is None


def test_threads_have_their_own_current_task() -> None:
    """The active task is per thread: a new thread starts with no current task."""
    seen: list[Task | None] = []
    with Task("main"):
        th = threading.Thread(target=lambda: seen.append(Task.current()))
        th.start()
        th.join()
    assert seen == [None]


def test_failed_task_records_its_error() -> None:
    """A failed task keeps the exception's type and message in the model and the file."""
    with pytest.raises(ValueError, match="no rows"), Task("bad") as t:
        raise ValueError("no rows")
    assert t.error == "ValueError: no rows"
    assert json.loads(t.model_dump_json())["error"] == "ValueError: no rows"
    with Task("good") as ok:
        pass
    assert "error" not in json.loads(ok.model_dump_json())


def test_a_failed_task_records_its_error_as_plain_text(task_spans: InMemorySpanExporter) -> None:
    """Terminal codes in an exception's message (Ray colours its errors) are not recorded.

    Before: Ray's colour codes (ESC, "[36m") were in the file, the span and
    ``tasktrace show``.
    """
    message = (
        "\x1b[36mray::work()\x1b[39m (pid=7)\n  File x.py\tline 3\r\x1b]8;;u\x07link\x1b]8;;\x07"
    )
    with pytest.raises(RuntimeError), Task("local") as t2:
        raise RuntimeError(message)
    assert t2.error == "RuntimeError: ray::work() (pid=7)\n  File x.py\tline 3link"
    (span,) = [s for s in task_spans.get_finished_spans() if s.name == "local"]
    assert span.status.description == t2.error


def test_numpy_values_are_stored_as_numbers(tmp_path: Path) -> None:
    """NumPy scalars and arrays (what train() returns) become numbers in the file and span."""
    np = pytest.importorskip("numpy", reason="numpy comes with the examples extra")
    path = tmp_path / "t.json"
    with Task("root", file=path), Task("epoch", lr=np.float64(0.01)) as epoch:
        epoch.loss = np.float32(0.5)
        epoch.confusion = np.array([[1, 0], [0, 1]])
    data = json.loads(path.read_text())
    assert data["status"] == "finished"
    child = data["subtasks"][0]
    assert (child["lr"], child["loss"], child["confusion"]) == (0.01, 0.5, [[1, 0], [0, 1]])


def test_unstorable_data_set_during_a_task_is_refused_at_once() -> None:
    """Setting extra data JSON cannot hold raises TypeError naming the key; the task goes on."""
    with Task("t") as t:
        with pytest.raises(TypeError, match="'handle'"):
            t.handle = object()
        t.ok = 1
    assert t.status is TaskStatus.FINISHED
    assert t.model_dump()["ok"] == 1


def test_first_task_times_exclude_the_tracing_set_up() -> None:
    """start_time is taken after tracing is set up: finish - start agrees with duration.

    Tracing is set up anew for each of 3 tasks (``reset_tracing``): a preemption between the
    clock reads adds to one task's gap (over 5 ms for 1 task in 100 on a loaded 2-core
    machine), while a set-up inside the times would be in every gap: the least is held to the
    bound.
    """
    gaps_s = []
    for _ in range(3):
        reset_tracing()  # the next task looks the tracer up and sets tracing up again
        with Task("t") as t:
            pass
        assert t.start_time is not None
        assert t.finish_time is not None
        assert t.duration is not None
        gaps_s.append(t.finish_time - t.start_time - t.duration)
    assert min(gaps_s) < 0.005, gaps_s


FIRST_TASK_PROGRAM = """\
from tasktrace import Task
with Task("t") as t:
    pass
print(t.finish_time - t.start_time - t.duration)
"""


def test_a_fresh_processs_first_task_times_exclude_building_the_meters() -> None:
    """In a new interpreter, the first task builds the meters (tens of ms) outside its times.

    The bound is the behaviour, so it is kept tight, and measured in 5 fresh processes: a
    preemption between the clock reads (the first task's start runs cold code for a few ms)
    adds a scheduler's wait to a gap, never takes from it (18-25 ms in 3 runs of 8 at load 8
    on 2 cores, 0.5 ms in the others), while building the meters inside the times would be in
    every gap. The least of the 5 is held to the bound.
    """
    gaps_s = []
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-c", FIRST_TASK_PROGRAM],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        gaps_s.append(float(done.stdout.strip()))
    # Building them took 26 to 55 ms inside the first task's times (a loaded 2-core machine);
    # what is left is the span's start and the scopes' (under a millisecond, a few when loaded).
    # A preemption between the finish's two clock reads (wall, then perf_counter) takes from
    # a gap instead (seen once: a negative gap failed the 5 runs' "every gap >= 0"); a
    # duration measured over more than the wall times would make every gap negative.
    assert sorted(gaps_s)[len(gaps_s) // 2] >= 0, gaps_s
    assert min(gaps_s) < 0.015, gaps_s


@pytest.mark.parametrize(
    "status", [TaskStatus.PENDING, TaskStatus.RUNNING, "running", "bogus", ["finished"]]
)
def test_finish_with_a_status_that_does_not_end_a_task_is_refused(status: object) -> None:
    """finish(PENDING / RUNNING / nonsense): ValueError naming `status`; the task runs on."""
    with Task("root") as root:
        task = Task("q")
        task.start()
        with pytest.raises(ValueError, match="status") as info:
            task.finish(status)  # type: ignore[arg-type]
        assert "finished, failed or cancelled" in str(info.value)
        assert task.status is TaskStatus.RUNNING
        task.finish()
    assert [t.status for t in root.subtasks] == [TaskStatus.FINISHED]


@pytest.mark.parametrize("how", ["file", "save_to_file"])
def test_a_relative_task_file_stays_where_it_was_when_given(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that changes folder while its task runs (as Hydra does) keeps one file.

    Before: the relative path was resolved at each write, so the file named at start stayed
    ``running`` for ever and the finished task went to a second file in the new folder.
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    task = Task("run", file="run.json") if how == "file" else Task("run")
    with task:
        if how == "save_to_file":
            task.save_to_file("run.json")
        monkeypatch.chdir(tmp_path / "outputs")
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"
    assert not (tmp_path / "outputs" / "run.json").exists()


def test_extra_data_pydantic_can_serialise_is_stored_as_its_json_form(
    tmp_path: Path, task_spans: InMemorySpanExporter
) -> None:
    """A datetime, Path, UUID, set, tuple or bytes is kept as pydantic's JSON form of it.

    LensKit's ``Task`` (a pydantic model with extra data allowed) accepts them and writes them
    as ISO text, strings and lists; the task file and the span carry the same JSON form.
    """
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.uuid4()
    given = {
        "when": when,
        "day": when.date(),
        "data_dir": Path("/data/ml-25m"),
        "run_id": ident,
        "seen": {3, 1, 2},
        "pair": (1, "a"),
        "raw": b"bytes",
        "nested": {"at": when, "paths": [Path("a"), Path("b")]},
    }
    path = tmp_path / "t.json"
    with Task("root", file=path, **given) as t:
        t.later = datetime.time(1, 2, 3)
    expected = {
        "when": when.isoformat().replace("+00:00", "Z"),
        "day": "2026-01-02",
        "data_dir": "/data/ml-25m",
        "run_id": str(ident),
        "seen": [1, 2, 3],
        "pair": [1, "a"],
        "raw": "bytes",
        "nested": {"at": when.isoformat().replace("+00:00", "Z"), "paths": ["a", "b"]},
        "later": "01:02:03",
    }
    saved = json.loads(path.read_text())
    assert {k: saved[k] for k in expected} == expected
    assert {k: t.model_dump()[k] for k in expected} == expected
    (span,) = task_spans.get_finished_spans()
    fields = attr.attributes_to_fields(span.attributes or {})
    assert {k: fields[k] for k in expected} == expected
    assert span.attributes["tasktrace.data.when"] == expected["when"]  # a string attribute


def test_extra_data_pydantic_cannot_serialise_is_refused_naming_the_key() -> None:
    """An object with no JSON form, non-UTF-8 bytes or an iterator: a TypeError naming the key."""
    with pytest.raises(TypeError, match="task data 'handle' cannot be stored: object"):
        Task("x", handle=object())
    with pytest.raises(TypeError, match="task data 'raw' cannot be stored: bytes"):
        Task("x", raw=b"\xff")
    with pytest.raises(TypeError, match="task data 'nested' cannot be stored"):
        Task("x", nested={"ok": 1, "handle": object()})
    lines = iter(["a", "b"])  # pydantic would read an iterator to its end: the caller's, used up
    with pytest.raises(TypeError, match="task data 'lines' cannot be stored: list_iterator"):
        Task("x", lines=lines)
    with pytest.raises(TypeError, match="task data 'nested' cannot be stored"):
        Task("x", nested={"rows": (i for i in range(3))})
    assert next(lines) == "a"  # left as it was
