"""Faults during a run: full or read-only disks, failing meters, a span processor that raises."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import ContextThread, Task, TaskStatus
from tasktrace.core.warn import reset_warnings
from tasktrace.meters import process, register_meter, reset_meters

from .export_helpers import file_warnings

# ----- a small real filesystem: disk full and read-only -------------------------------------


@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    """Mount a real tmpfs of ``size`` at ``where`` (needs root + CAP_SYS_ADMIN), else skip."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_disk_full_mid_run_warns_once_keeps_file_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full: one warning, the old file intact, the task goes on, a later write catches up."""
    with _small_tmpfs(tmp_path / "small") as small:
        path = small / "run.json"
        with caplog.at_level(logging.WARNING), Task("job", file=path) as task:
            before = path.read_bytes()
            filler = _fill(small)
            task.epoch = 1
            task.update()
            task.update()  # a second failed refresh: no second warning
            assert path.read_bytes() == before
            assert Task.model_validate_json(path.read_bytes()).status is TaskStatus.RUNNING
            warnings = file_warnings(caplog)
            assert len(warnings) == 1, warnings
            assert str(path) in warnings[0]
            assert "No space left" in warnings[0]
            filler.unlink()
            task.update()  # space again: this refresh catches up
            caught_up = Task.model_validate_json(path.read_bytes()).model_extra or {}
            assert caught_up.get("epoch") == 1
            _fill(small)
            task.update()  # full again after a recovery: warned again
            assert len(file_warnings(caplog)) == 2
            (small / "filler").unlink()
        final = Task.model_validate_json(path.read_bytes())
        assert final.status is TaskStatus.FINISHED
        assert sorted(p.name for p in small.iterdir()) == ["run.json"]  # no temp files left


def test_read_only_mid_run_keeps_previous_file_and_task_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder remounted read-only: one warning, old file kept, task finishes, user code runs."""
    with _small_tmpfs(tmp_path / "ro", size="1m") as folder:
        path = folder / "run.json"
        ran_after = False
        with caplog.at_level(logging.WARNING), Task("job", file=path) as task:
            before = path.read_bytes()
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            try:
                task.update()
                with Task("child"):
                    pass
                ran_after = True
            finally:
                ro_warnings = file_warnings(caplog)
                subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        assert ran_after
        assert len(ro_warnings) == 1, ro_warnings
        assert "Read-only file system" in ro_warnings[0]
        assert "the previous file is kept" in ro_warnings[0]
        assert before  # the file written before the fault
        final = Task.model_validate_json(path.read_bytes())
        assert final.status is TaskStatus.FINISHED
        assert [s.label for s in final.subtasks] == ["child"]
        assert task.status is TaskStatus.FINISHED


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Remount the tmpfs at ``folder`` read-only for the block."""
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)


def test_a_failed_last_write_does_not_promise_a_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The finish's write fails: the warning says the task finished, no refresh will retry."""
    with _small_tmpfs(tmp_path / "ro", size="1m") as folder:
        path = folder / "run.json"
        with caplog.at_level(logging.WARNING):
            task = Task("job", file=path)
            task.start()  # its file written
            with _read_only(folder):
                task.finish()
                warnings = file_warnings(caplog)
        assert task.status is TaskStatus.FINISHED
        assert len(warnings) == 1, warnings
        assert "Read-only file system" in warnings[0]
        assert "the task has finished: no refresh will retry" in warnings[0]
        assert "later refreshes will retry" not in warnings[0]
        assert Task.model_validate_json(path.read_bytes()).status is TaskStatus.RUNNING  # kept


def test_a_failed_last_write_with_a_subtask_still_running_says_it_will_write_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The finish's write fails while a subtask runs on: its finish writes the file, and does."""
    with _small_tmpfs(tmp_path / "ro", size="1m") as folder:
        path = folder / "run.json"
        started, release = threading.Event(), threading.Event()

        def work() -> None:  # a subtask in another thread, which outlives the task
            with Task("late"):
                started.set()
                release.wait(10)

        with caplog.at_level(logging.WARNING):
            task = Task("job", file=path)
            task.start()
            thread = ContextThread(target=work)
            thread.start()
            assert started.wait(10)
            with _read_only(folder):
                task.finish()
                warnings = file_warnings(caplog)
            release.set()
            thread.join(10)
        assert len(warnings) == 1, warnings
        assert "a subtask still running will write it again when it finishes" in warnings[0]
        saved = Task.model_validate_json(path.read_bytes())
        assert saved.status is TaskStatus.FINISHED
        assert [(t.label, t.status) for t in saved.subtasks] == [("late", TaskStatus.FINISHED)]


@pytest.mark.parametrize(
    ("monitor", "then"),
    [(True, "later refreshes will retry"), (False, "the task's finish will retry")],
)
def test_a_failed_write_says_what_will_retry_and_the_last_one_says_none_will(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monitor: bool, then: str
) -> None:
    """A running task's write fails (refreshed file or not), then its last write fails too.

    The first warning says what will write the file again; the last write, failing as well,
    warns once more that nothing will (the first one's promise did not come true).
    """
    with _small_tmpfs(tmp_path / "ro", size="1m") as folder:
        path = folder / "run.json"
        with caplog.at_level(logging.WARNING):
            task = Task("job")
            task.start()
            task.save_to_file(path, monitor=monitor)
            with _read_only(folder):
                task.update()
                task.update()  # failing again: no second warning
                running = file_warnings(caplog)
                task.finish()
                warnings = file_warnings(caplog)
        assert len(running) == 1, running
        assert then in running[0]
        assert len(warnings) == 2, warnings
        assert "the task has finished: no refresh will retry" in warnings[1]
        assert Task.model_validate_json(path.read_bytes()).status is TaskStatus.RUNNING  # kept


# ----- every meter failing at once -----------------------------------------------------------


class _BrokenMeter:
    """A meter that fails the way a real one can (raising at start or at read)."""

    def __init__(self, name: str, error: Exception, *, at: str) -> None:
        self.name = name
        self._error = error
        self._at = at

    def available(self) -> bool:
        return True

    def start(self) -> object:
        if self._at == "start":
            raise self._error
        return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> dict[str, Any]:
        raise self._error


@pytest.fixture
def broken_meters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """NVML, RAPL and Prometheus meters that all fail, and /proc unreadable for the RSS mark."""
    reset_warnings()
    process._warn.reset()
    reset_meters([])
    register_meter(_BrokenMeter("nvml", RuntimeError("NVML_ERROR_UNKNOWN"), at="start"))
    register_meter(_BrokenMeter("rapl", PermissionError(13, "Permission denied"), at="read"))
    register_meter(_BrokenMeter("prometheus", ValueError("garbage: <html>"), at="read"))
    missing = str(tmp_path / "no-proc")
    monkeypatch.setattr(process, "_STATUS", missing)
    monkeypatch.setattr(process, "_CLEAR_REFS", missing)
    monkeypatch.setattr(process._clear_refs, "_fd", -1)  # the kept descriptors: reopen them
    monkeypatch.setattr(process._status_hwm_bytes, "_fd", -1)
    monkeypatch.setattr(process.rss_marks, "use_rusage", False)
    monkeypatch.setattr(process.rss_marks, "_read", process._status_hwm_bytes)
    yield
    reset_meters()
    reset_warnings()
    process._warn.reset()


@pytest.mark.usefixtures("broken_meters")
def test_every_meter_failing_gives_none_one_warning_each_and_exports(
    task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """All meters failing: values None, one warning per meter, the task runs and exports."""
    path = tmp_path / "t.json"
    ran = 0
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with Task("job", file=path) as task:
                task.update()
                ran += 1
    assert ran == 2
    assert task.status is TaskStatus.FINISHED
    for field in ("peak_memory", "cpu_power", "gpu_power", "system_power"):
        assert getattr(task, field) is None, field
    assert task.cpu_time is not None  # getrusage still works
    meter_warnings = [r.getMessage() for r in caplog.records if "meter" in r.getMessage()]
    for name in ("nvml", "rapl", "prometheus"):
        assert sum(f"'{name}'" in m for m in meter_warnings) == 1, meter_warnings
    assert sum("cannot reset the RSS" in r.getMessage() for r in caplog.records) == 1
    spans = task_spans.get_finished_spans()
    assert [s.name for s in spans] == ["job", "job"]
    assert spans[-1].attributes is not None
    assert spans[-1].attributes["tasktrace.task.status"] == "finished"
    assert "tasktrace.task.peak_memory_bytes" not in spans[-1].attributes
    assert Task.model_validate_json(path.read_bytes()).status is TaskStatus.FINISHED


# ----- a user's own span processor that raises -----------------------------------------------


class _RaisingProcessor(SpanProcessor):
    """A user's buggy span processor; inert once disarmed (the SDK cannot remove one)."""

    def __init__(self) -> None:
        self.armed = True

    def on_start(self, span: Span, parent_context: object = None) -> None:
        if self.armed:
            raise RuntimeError("user processor on_start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.armed:
            raise RuntimeError("user processor on_end")


def test_raising_user_span_processor_leaves_tree_and_file_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's span processor raising in on_start/on_end: tree, file and user code unaffected."""
    provider = trace.get_tracer_provider()
    processor = _RaisingProcessor()
    provider.add_span_processor(processor)  # type: ignore[attr-defined]
    path = tmp_path / "t.json"
    try:
        with caplog.at_level(logging.WARNING), Task("outer", file=path, k=1) as outer:
            with Task("inner") as inner:
                value = 42
            assert inner.status is TaskStatus.FINISHED
    finally:
        processor.armed = False
    assert value == 42
    assert outer.status is TaskStatus.FINISHED
    assert [(s.label, s.status) for s in outer.subtasks] == [("inner", TaskStatus.FINISHED)]
    saved = json.loads(path.read_text())
    assert saved["status"] == "finished"
    assert [s["label"] for s in saved["subtasks"]] == ["inner"]
    assert saved["duration"] is not None
    assert any("user processor" in r.getMessage() for r in caplog.records)
