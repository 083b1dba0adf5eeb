"""No writer of tasktrace replaces a file that is not tasktrace's own output (unless forced)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.cli import main

from ..conftest import FIXTURES

_CSV = b"a,b\n1,2\n"


def _data_csv(folder: Path) -> Path:
    path = folder / "data.csv"
    path.write_bytes(_CSV)
    return path


def test_run_file_refuses_a_users_file_and_does_not_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`run --file data.csv` exits 2 naming the file, what it holds and --force; runs nothing."""
    data = _data_csv(tmp_path)
    marker = tmp_path / "ran"
    assert main(["run", "-q", "--file", str(data), "touch", str(marker)]) == 2
    err = capfd.readouterr().err
    assert str(data) in err
    assert "8 bytes of text" in err
    assert "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert data.read_bytes() == _CSV
    assert not marker.exists()


def test_run_force_replaces_the_file(tmp_path: Path) -> None:
    """`run --force --file data.csv` replaces it with the task file."""
    data = _data_csv(tmp_path)
    assert main(["run", "-q", "--force", "--file", str(data), "true"]) == 0
    assert Task.model_validate_json(data.read_bytes()).status is TaskStatus.FINISHED


def test_run_replaces_the_previous_runs_task_file(tmp_path: Path) -> None:
    """A task file from an earlier run is replaced without --force, as are empty files."""
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "-l", "first", "true"]) == 0
    assert main(["run", "-q", "-f", str(out), "-l", "second", "true"]) == 0
    assert Task.model_validate_json(out.read_bytes()).label == "second"
    empty = tmp_path / "empty.json"
    empty.touch()
    assert main(["run", "-q", "-f", str(empty), "true"]) == 0
    assert Task.model_validate_json(empty.read_bytes()).status is TaskStatus.FINISHED


_NESTED = (FIXTURES / "nested.json").read_bytes()  # 4.8 kB: more than the bytes checked


@pytest.mark.parametrize(
    "content",
    [
        b'{"name": "settings", "lr": 0.1}\n',
        b"[1, 2, 3]\n",
        b"\x00\x01binary\xff",
        b'{"resourceSpans": 3, "other": true}\n',
        b"a,b\n1,2\n" * 2000,
        _NESTED[:-10],
    ],
    ids=["json-object", "json-array", "binary", "not-otlp", "large-csv", "cut-task-file"],
)
def test_python_task_file_refuses_what_is_not_a_task_file(tmp_path: Path, content: bytes) -> None:
    """`Task(file=...)` raises FileExistsError at start, before any work, and keeps the bytes."""
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    task = Task("t", file=path)
    with pytest.raises(FileExistsError, match="save_to_file") as info:
        task.start()
    assert str(path) in str(info.value)
    assert task.status is TaskStatus.PENDING
    assert path.read_bytes() == content


def test_a_task_file_does_not_replace_a_runs_otlp_json_lines(tmp_path: Path) -> None:
    """`Task(file="spans.jsonl")` over OTLP JSON lines (a run's record): refused, kept.

    As `export` refuses to replace a record with output of another kind; `save_to_file(...,
    force=True)` replaces it.
    """
    source = tmp_path / "run.json"
    with Task("run", file=source):
        pass
    spans = tmp_path / "spans.jsonl"
    assert main(["export", str(source), "--format", "otlp-json", "-o", str(spans)]) == 0
    before = spans.read_bytes()
    with pytest.raises(FileExistsError, match="OTLP JSON lines"), Task("t", file=spans):
        pass
    assert spans.read_bytes() == before
    task = Task("t")
    with pytest.raises(FileExistsError, match="OTLP JSON lines"):
        task.save_to_file(spans)
    task.save_to_file(spans, force=True)
    with task:
        pass
    assert Task.model_validate_json(spans.read_bytes()).label == "t"


def test_python_api_refuses_data_csv_and_save_to_file_force_overrides(tmp_path: Path) -> None:
    """`Task(file="data.csv")` and `save_to_file` raise; `save_to_file(..., force=True)` writes."""
    data = _data_csv(tmp_path)
    with pytest.raises(FileExistsError, match=r"data\.csv.*8 bytes of text"), Task("t", file=data):
        pass
    assert data.read_bytes() == _CSV
    task = Task("t")
    with pytest.raises(FileExistsError):
        task.save_to_file(data)
    assert data.read_bytes() == _CSV
    task.save_to_file(data, force=True)
    with task:
        pass
    assert Task.model_validate_json(data.read_bytes()).status is TaskStatus.FINISHED


def test_python_task_file_replaces_task_files_including_lenskits(tmp_path: Path) -> None:
    """A LensKit task file, a pretty-printed one and a finished run's file are replaced."""
    lenskit = tmp_path / "lenskit.json"
    lenskit.write_bytes((FIXTURES / "nested.json").read_bytes())
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(lenskit.read_bytes()), indent=2))
    for path in (lenskit, pretty):
        with Task("again", file=path):
            pass
        assert Task.model_validate_json(path.read_bytes()).label == "again"


def test_export_refuses_a_users_file_and_force_overrides(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`export -o data.csv` exits 2 naming the file and --force, leaving it; --force writes."""
    data = _data_csv(tmp_path)
    source = str(FIXTURES / "nested.json")
    assert main(["export", source, "--format", "chrome", "-o", str(data)]) == 2
    err = capfd.readouterr().err
    assert str(data) in err
    assert "--force" in err
    assert data.read_bytes() == _CSV
    assert main(["export", source, "--format", "chrome", "-o", str(data), "--force"]) == 0
    assert "traceEvents" in json.loads(data.read_bytes())


def test_export_replaces_its_own_earlier_outputs(tmp_path: Path) -> None:
    """Exporting again over tasktrace's own chrome trace, OTLP JSON lines or task file works."""
    source = str(FIXTURES / "nested.json")
    for fmt in ("chrome", "otlp-json", "task"):
        out = tmp_path / f"out.{fmt}"
        assert main(["export", source, "--format", fmt, "-o", str(out)]) == 0
        first = out.read_bytes()
        assert main(["export", source, "--format", fmt, "-o", str(out)]) == 0
        assert out.read_bytes() == first
    # and one format over another: a task file over a chrome trace (a view, made from a
    # record); a record (OTLP JSON lines) by another format only when forced
    assert main(["export", source, "--format", "task", "-o", str(tmp_path / "out.chrome")]) == 0
    spans = str(tmp_path / "out.otlp-json")
    assert main(["export", source, "--format", "chrome", "-o", spans]) == 2
    assert main(["export", source, "--format", "chrome", "-o", spans, "--force"]) == 0


def test_export_refuses_a_chrome_trace_tasktrace_did_not_write(tmp_path: Path) -> None:
    """A Chrome trace from another tool (no tasktrace root_task_id) is not replaced."""
    other = tmp_path / "profile.json"
    content = json.dumps({"traceEvents": [], "otherData": {"tool": "torch"}}).encode()
    other.write_bytes(content)
    assert (
        main(["export", str(FIXTURES / "nested.json"), "--format", "chrome", "-o", str(other)]) == 2
    )
    assert other.read_bytes() == content


def test_run_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    """A folder given as the task file is refused by name, even with --force."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is a folder"):
        Task("t", file=folder).start()
    assert main(["run", "-q", "--force", "-f", str(folder), sys.executable, "-c", "0"]) == 2
    assert (folder / "keep.txt").read_text() == "x"


def test_special_files_are_refused_even_with_force(tmp_path: Path) -> None:
    """A FIFO is never opened nor replaced, even with force=True (a device node likewise)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="special file"):
        Task("t", file=fifo).start()
    with pytest.raises(FileExistsError, match="special file"):
        Task("t").save_to_file(fifo, force=True)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file: nothing to refuse")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A file tasktrace cannot read (so cannot tell what it holds) is not replaced."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"x")
    secret.chmod(0)
    with pytest.raises(FileExistsError, match="cannot be read"):
        Task("t", file=secret).start()
    secret.chmod(0o600)
    assert secret.read_bytes() == b"x"


@pytest.mark.parametrize("kind", ["descriptor", "device", "folder"])
def test_a_link_to_a_descriptor_a_device_or_a_folder_is_refused_and_kept(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o /dev/stdout`` (a link to ``/proc/self/fd/1``): refused, the link left as it is.

    Before: the link was replaced by a regular file holding the output (as root, the
    system's ``/dev/stdout`` itself), and nothing reached standard output.
    """
    target = {"descriptor": "/proc/self/fd/1", "device": os.devnull, "folder": str(tmp_path)}
    link = tmp_path / "out.json"
    link.symlink_to(target[kind])
    (tmp_path / "a.json").write_bytes((FIXTURES / "nested.json").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["export", "a.json", "--format", "chrome", "-o", "out.json"]) == 2
    err = capsys.readouterr().err
    assert "out.json" in err
    if kind != "folder":  # a folder is the option's own error ("is a directory")
        assert "not replaced: it is a link to a process's descriptor" in err
    assert link.is_symlink()
    assert os.readlink(link) == target[kind]
    with pytest.raises(FileExistsError, match="never through a link"):
        Task("t", file=link).start()
    assert os.readlink(link) == target[kind]


def test_a_symlink_is_replaced_and_its_target_kept(tmp_path: Path) -> None:
    """A symlink to a user's file is replaced itself (no data lost); the file it names is kept."""
    data = _data_csv(tmp_path)
    link = tmp_path / "run.json"
    link.symlink_to(data)
    assert main(["run", "-q", "-f", str(link), "true"]) == 0
    assert not link.is_symlink()
    assert Task.model_validate_json(link.read_bytes()).exit_code == 0
    assert data.read_bytes() == _CSV
