"""The Task façade: seed API, life cycle, statuses, files, and the span ⇄ task tree."""

from __future__ import annotations

import json
import pickle
import threading
import uuid
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from tasktrace import Task, TaskStatus
from tasktrace.core import attributes as attr
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.testing import InMemorySpanExporter

from .conftest import load_json


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_seed_fields_and_defaults() -> None:
    """A new task is PENDING with the seed's fields, a random id and this host's name."""
    t = Task("x")
    assert t.status is TaskStatus.PENDING
    assert isinstance(t.task_id, uuid.UUID)
    assert t.hostname
    assert t.subtasks == []
    for name in ("start_time", "finish_time", "duration", "cpu_time", "peak_memory"):
        assert getattr(t, name) is None
    assert str(t) == f"<Task {t.task_id}: x>"


def test_lenskit_fixtures_round_trip(lenskit_fixtures: list[Path]) -> None:
    """Every LensKit task file loads and re-serialises with exactly the same values."""
    for path in lenskit_fixtures:
        task = Task.model_validate_json(path.read_text())
        assert json.loads(task.model_dump_json()) == load_json(path), path.name


def test_lenskit_fixture_details(lenskit_fixtures: list[Path]) -> None:
    """Statuses, nesting, tags and extra data of the LensKit files survive loading."""
    files = {p.stem: Task.model_validate_json(p.read_text()) for p in lenskit_fixtures}
    assert files["failed"].status is TaskStatus.FAILED
    assert files["failed"].subtasks[0].status is TaskStatus.FINISHED
    assert files["cancelled"].status is TaskStatus.CANCELLED
    nested = files["nested"]
    assert nested.tags == ["exp"]
    epoch = nested.subtasks[1]
    assert (epoch.label, epoch.epoch, epoch.tags) == ("epoch 0", 0, ["train", "epoch"])
    assert [s.label for s in epoch.subtasks] == ["training epoch 0", "measuring epoch 0"]


def test_chassis_power_alias() -> None:
    """LensKit's older ``chassis_power`` key loads into ``system_power``."""
    t = Task.model_validate({"label": "x", "chassis_power": 12.5})
    assert t.system_power == 12.5


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


def test_span_attributes_equal_task_fields(task_spans: InMemorySpanExporter) -> None:
    """Each span carries the task's measurements and data; mapping back gives the same values."""
    with Task("work", tags=["train", "x"], epoch=3, config={"lr": 0.1}) as t:
        sum(range(100_000))
    (span,) = task_spans.get_finished_spans()
    a = span.attributes
    assert a[attr.TASK_ID] == str(t.task_id)
    assert a[attr.STATUS] == "finished"
    assert a[attr.DURATION_S] == t.duration
    assert a[attr.CPU_TIME_S] == t.cpu_time
    assert a[attr.PEAK_MEMORY_BYTES] == t.peak_memory
    assert a["tasktrace.data.tags"] == ("train", "x")
    assert a["tasktrace.data.epoch"] == 3
    assert a["tasktrace.data_json.config"] == '{"lr":0.1}'
    fields = attr.attributes_to_fields(a)
    assert fields["tags"] == ["train", "x"]
    assert fields["config"] == {"lr": 0.1}
    assert fields["duration"] == t.duration
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


def test_user_span_inside_task(task_spans: InMemorySpanExporter) -> None:
    """A user's own OTel span inside a task appears in the task tree and in the trace."""
    tracer = trace.get_tracer("user-code")
    with Task("outer") as outer, tracer.start_as_current_span("my span") as s:
        s.set_attribute("rows", 10)
        with Task("inside span") as inner:
            pass
    spans = _by_name(task_spans.get_finished_spans())
    assert spans["my span"].parent.span_id == spans["outer"].context.span_id
    assert spans["inside span"].parent.span_id == spans["my span"].context.span_id
    (node,) = outer.subtasks
    assert node.label == "my span"
    assert node.foreign_span
    assert node.status is TaskStatus.FINISHED
    assert node.rows == 10
    assert node.span_id == format(spans["my span"].context.span_id, "016x")
    assert node.subtasks == [inner]
    assert inner.parent_id == node.task_id


def test_user_spans_can_be_left_out() -> None:
    """With include_spans off, non-task spans are not in the tree; tasks inside them still are."""
    reset_settings(Settings(include_spans=False))
    tracer = trace.get_tracer("user-code")
    with Task("outer") as outer, tracer.start_as_current_span("hidden"), Task("inner"):
        pass
    assert [s.label for s in outer.subtasks] == ["inner"]


def test_unsampled_trace_still_builds_tree(task_spans: InMemorySpanExporter) -> None:
    """Under an unsampled remote parent no span is exported, but the task tree is complete."""
    remote = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with Task("root") as root:
            with Task("a"), Task("a1"):
                pass
            with Task("b"):
                pass
    finally:
        otel_context.detach(token)
    assert task_spans.get_finished_spans() == ()
    assert [s.label for s in root.subtasks] == ["a", "b"]
    assert [s.label for s in root.subtasks[0].subtasks] == ["a1"]
    assert root.trace_id == format(0x1234, "032x")


def test_task_file_written_at_start_and_finish(tmp_path: Path) -> None:
    """The file shows RUNNING during the task and the finished tree afterwards."""
    path = tmp_path / "task.json"
    with Task("filed", file=path) as t:
        running = Task.model_validate_json(path.read_text())
        assert running.status is TaskStatus.RUNNING
        assert running.task_id == t.task_id
        with Task("child"):
            pass
    done = Task.model_validate_json(path.read_text())
    assert done.status is TaskStatus.FINISHED
    assert [s.label for s in done.subtasks] == ["child"]
    assert done.duration == t.duration
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_missing_folder_fails_before_work(tmp_path: Path) -> None:
    """A task file in a missing folder is a clear error at start, before the body runs."""
    ran = False
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        Task("x", file=tmp_path / "nope" / "t.json"),
    ):
        ran = True
    assert not ran


def test_refresh_rewrites_running_file(tmp_path: Path) -> None:
    """A running task's file is refreshed with measurements so far every refresh interval."""
    reset_settings(Settings(refresh_interval_s=0.05))
    path = tmp_path / "t.json"
    seen: list[float] = []
    with Task("long", file=path):
        deadline = threading.Event()
        for _ in range(100):
            loaded = Task.model_validate_json(path.read_text())
            if loaded.duration is not None:
                seen.append(loaded.duration)
            if len(set(seen)) >= 2:
                break
            deadline.wait(0.02)
    assert len(set(seen)) >= 2, seen
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.FINISHED


def test_save_to_file_and_update(tmp_path: Path) -> None:
    """save_to_file writes now; update() re-measures and re-writes a running task."""
    path = tmp_path / "t.json"
    t = Task("x")
    t.save_to_file(path, monitor=False)
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.PENDING
    t.start()
    sum(range(200_000))
    t.update()
    mid = Task.model_validate_json(path.read_text())
    assert mid.status is TaskStatus.RUNNING
    assert mid.cpu_time is not None
    assert mid.duration is not None
    t.finish()
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.FINISHED


def test_add_subtask_adds_or_updates() -> None:
    """add_subtask adds a new subtask once and replaces one with the same id."""
    parent = Task("p")
    child = Task("c")
    parent.add_subtask(child)
    assert child.parent_id == parent.task_id
    updated = child.model_copy(update={"status": TaskStatus.FINISHED})
    parent.add_subtask(updated)
    assert parent.subtasks == [updated]


def test_total_cpu_adds_subprocess_subtasks() -> None:
    """total_cpu adds subprocess subtasks and reaped children to the task's own CPU."""
    t = Task.model_validate(
        {
            "label": "p",
            "cpu_time": 1.0,
            "children_cpu_time_s": 0.5,
            "subtasks": [
                {"label": "in-process", "cpu_time": 0.7},
                {"label": "worker", "cpu_time": 2.0, "subprocess": True},
            ],
        }
    )
    assert t.total_cpu() == pytest.approx(3.5)
    assert Task("x").total_cpu() is None


def test_friendly_duration() -> None:
    """friendly_duration gives human units, or None before the task ran."""
    assert Task("x").friendly_duration is None
    assert Task.model_validate({"label": "x", "duration": 187.2}).friendly_duration == "3m07.20s"
    assert Task.model_validate({"label": "x", "duration": 0.85}).friendly_duration == "850ms"


def test_pickle_round_trip() -> None:
    """A task pickles (through __reduce__) with its data and extra fields."""
    with Task("x", tags=["a"]) as t:
        pass
    copy = pickle.loads(pickle.dumps(t))
    assert copy.model_dump() == t.model_dump()


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


def test_unencodable_label_never_breaks_the_task_file(tmp_path: Path) -> None:
    """A label with a lone surrogate (a non-UTF-8 file name) is written escaped, not raised."""
    path = tmp_path / "t.json"
    with Task("root", file=path), Task("file \udcff.csv"):
        pass
    loaded = Task.model_validate_json(path.read_text())
    assert loaded.status is TaskStatus.FINISHED
    assert loaded.subtasks[0].label == "file \\udcff.csv"


def test_deep_tree_is_written_and_read_back(tmp_path: Path) -> None:
    """A tree 150 levels deep (beyond pydantic's JSON depth limits) is saved and shown."""
    from contextlib import ExitStack

    from tasktrace.cli import main

    path = tmp_path / "deep.json"
    with Task("root", file=path), ExitStack() as stack:
        for i in range(150):
            stack.enter_context(Task(f"level {i}"))
    data = json.loads(path.read_text())
    depth = 0
    while data["subtasks"]:
        data = data["subtasks"][0]
        depth += 1
    assert depth == 150
    assert main(["show", "--depth", "2", str(path)]) == 0


def test_task_ids_ignore_the_programs_random_seed() -> None:
    """A program's random.seed() (every seeded experiment) never makes task ids repeat."""
    import random

    random.seed(42)
    first = Task("a").task_id
    random.seed(42)
    second = Task("a").task_id
    assert first != second
    assert first.version == 4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_draws_its_own_task_ids(tmp_path: Path) -> None:
    """A forked child does not repeat the ids its parent draws next."""
    import os

    out = tmp_path / "child_id"
    pid = os.fork()
    if pid == 0:  # the child
        try:
            out.write_text(str(Task("child").task_id))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert out.read_text() != str(Task("parent").task_id)


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
    """start_time is taken after tracing is set up: finish - start agrees with duration."""
    with Task("t") as t:
        pass
    assert t.start_time is not None
    assert t.finish_time is not None
    assert t.duration is not None
    assert t.finish_time - t.start_time < t.duration + 0.005
