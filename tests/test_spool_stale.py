"""What a killed ``tasktrace run`` leaves in a spool folder is removed by the next run.

Only that: a live process's record is never touched, and a reused pid is told from the process
that wrote a record by its start time.

Real ``tasktrace run`` processes killed by ``SIGKILL``, real Python commands using tasktrace,
real spool folders (private ones under a test ``TMPDIR``, and named ones, ``TASKTRACE_SPOOL``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tasktrace.tree.spool_owners import owner_id, sweep

from .export_helpers import clean_env
from .suite_tmp import SYSTEM_TMP

COMMAND = """
import os, signal, sys, time
from pathlib import Path
from tasktrace import Task

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
deadline = time.monotonic() + 120  # a failed test never leaves it running for ever
with Task("doomed run's step"):
    # The SIGTERM a killed run's command gets (its parent-death signal) is ignored here, as a
    # command may: it outlives the run, and its record stays in the run's spool folder.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.write_text(str(os.getpid()))
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""
"""A command whose one task runs until the file ``go`` exists (its pid in ``ready`` first), or
for 2 minutes at most, ignoring SIGTERM."""

QUICK = "from tasktrace import Task\nwith Task('next'):\n    pass\n"


def _tasktrace(
    env: dict[str, str], *args: str, output: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tasktrace.cli", *args],
        env=env,
        stdout=output,
        stderr=output,
        text=True,
    )


def _wait_for(path: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until ``pid`` ended (a zombie no init reaps counts as ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def _killed_run(tmp_path: Path, env: dict[str, str]) -> tuple[int, Path]:
    """Start ``tasktrace run`` of :data:`COMMAND`, SIGKILL it while the command's task runs.

    Returns the command's pid (it still runs; it ends once ``tmp_path/go`` exists) and the
    ``go`` file.
    """
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    ready, go = tmp_path / "ready", tmp_path / "go"
    argv = ["run", "-q", "--", sys.executable, str(script), str(ready), str(go)]
    run = _tasktrace(env, *argv, output=subprocess.DEVNULL)  # the command outlives it
    return _kill_when_ready(run, ready), go


def _kill_when_ready(run: subprocess.Popen[str], ready: Path) -> int:
    """SIGKILL the ``tasktrace run`` ``run`` once its command wrote its pid to ``ready``.

    Returns the command's pid (the command still runs).
    """
    try:
        command_pid = int(_wait_for(ready))
    finally:
        run.kill()
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    return command_pid


def _next_run(env: dict[str, str]) -> str:
    run = _tasktrace(env, "run", "-q", "--", sys.executable, "-c", QUICK)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    return stderr


def _records(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]


def test_next_run_removes_the_private_spool_of_a_killed_run(tmp_path: Path) -> None:
    """A SIGKILLed run's private spool folder is removed by the next run, never while in use.

    While the killed run's command still runs, the next run leaves its folder and record
    alone (the command may still write it); once the command ended, the next run removes the
    folder and says which task it had never merged. Seen failing without the fix: the folder
    and the command's finished record were still there after the next run, with no word.
    """
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = clean_env(TMPDIR=str(temporary))
    command_pid, go = _killed_run(tmp_path, env)
    (folder,) = temporary.glob("tasktrace-spool-*")
    try:
        assert _next_run(env).strip() == ""  # the command runs: nothing touched, no word
        assert folder.is_dir()
        (record,) = _records(folder)
        before = json.loads(record.read_text())
        assert before["label"] == "doomed run's step"
        assert before["status"] == "running"
    finally:
        go.write_text("go")
    _wait_gone(command_pid)
    assert json.loads(record.read_text())["status"] == "finished"  # never merged anywhere
    stderr = _next_run(env)
    assert not folder.exists(), list(folder.iterdir())
    assert list(temporary.glob("tasktrace-spool-*")) == []  # the next run's own is gone too
    assert 'removed 1 task record ("doomed run\'s step"), left in ' in stderr, stderr
    assert "by an earlier run that was killed before it merged them" in stderr, stderr
    assert "no task file of that run to merge it into (none was given" in stderr, stderr
    assert "exported" not in stderr, stderr  # no claim about spans it cannot know of
    assert str(folder) in stderr, stderr


def test_a_named_spool_folder_does_not_grow(tmp_path: Path) -> None:
    """Runs sharing a named spool folder leave no record behind, a killed one's included.

    A run removes the records it merged once their writers ended; the record a killed run
    never merged is removed (and reported) by the next run once its writer ended. Seen
    failing without the fix: every run's command left its record (2 after the first 2 runs).
    """
    spool = tmp_path / "spool"
    env = clean_env(TASKTRACE_SPOOL=str(spool))
    for _ in range(2):
        assert "removed" not in _next_run(env)
    assert _records(spool) == []
    command_pid, go = _killed_run(tmp_path, env)
    go.write_text("go")
    _wait_gone(command_pid)
    assert len(_records(spool)) == 1
    stderr = _next_run(env)
    assert _records(spool) == [], list(spool.iterdir())
    assert "removed 1 task record (" in stderr, stderr
    assert [p.name for p in spool.iterdir()] == [], list(spool.iterdir())  # markers too


TRAIN = """
import os, sys, time
from pathlib import Path
from tasktrace import Task

with Task("train"):
    with Task("epoch 0"):
        pass
    with Task("epoch 1"):
        Path(sys.argv[1]).write_text(str(os.getpid()))
        time.sleep(120)  # until the run's death sends SIGTERM (its parent-death signal)
"""
"""The tester's command: a Python program whose tasks run when its ``tasktrace run`` is killed."""


def test_what_a_killed_run_never_merged_goes_into_its_task_file(tmp_path: Path) -> None:
    """A ``tasktrace run --file`` killed by SIGKILL: the next run merges its command's tasks there.

    The command gets SIGTERM as the run dies and finishes its tasks as cancelled; its final
    record is left in the killed run's private spool folder, which nobody merged: the file says
    ``running`` with the command's tasks as of the run's last refresh at best. The next run, in
    another folder, merges the record into that file (the root left as it was) and says so.
    Seen failing without the fix: the next run removed the record (the only copy of the
    command's tree) and ``k.json`` kept no ``train`` task.
    """
    temporary, work, elsewhere = tmp_path / "tmp", tmp_path / "work", tmp_path / "elsewhere"
    for folder in (temporary, work, elsewhere):
        folder.mkdir()
    env = clean_env(TMPDIR=str(temporary))
    (work / "long.py").write_text(TRAIN)
    ready, task_file = tmp_path / "ready", work / "k.json"
    argv = [sys.executable, "-m", "tasktrace.cli", "run", "--file", "k.json", "--"]
    run = subprocess.Popen(
        [*argv, sys.executable, "long.py", str(ready)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_gone(_kill_when_ready(run, ready))
    before = json.loads(task_file.read_text())
    assert before["status"] == "running"
    assert all(sub["status"] == "running" for sub in before["subtasks"])  # never the final state
    next_run = subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", "run", "-q", "--", sys.executable, "-c", QUICK],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    after = json.loads(task_file.read_text())
    assert {k: v for k, v in after.items() if k != "subtasks"} == {
        k: v for k, v in before.items() if k != "subtasks"
    }  # the root as the killed run left it: running, no end invented
    (train,) = after["subtasks"]
    assert (train["label"], train["status"], train["subprocess"]) == ("train", "cancelled", True)
    epochs = [(sub["label"], sub["status"]) for sub in train["subtasks"]]
    assert epochs == [("epoch 0", "finished"), ("epoch 1", "cancelled")]
    stderr = next_run.stderr
    assert f"merged 1 task record ('train') into {task_file}, left in " in stderr, stderr
    assert "by an earlier run that was killed before it merged them" in stderr, stderr
    assert stderr.count("tasktrace:") == 1, stderr
    assert list(temporary.glob("tasktrace-spool-*")) == []  # nothing left behind


def _record(folder: Path, owner: str, parent: uuid.UUID, label: str) -> Path:
    task_id = uuid.uuid4()
    path = folder / f"{task_id}.{owner}.json"
    path.write_text(json.dumps({"task_id": str(task_id), "parent_id": str(parent), "label": label}))
    return path


def test_a_reused_pid_is_not_taken_for_the_writer(tmp_path: Path) -> None:
    """A record is its writer's while that very process runs: same pid, same start time.

    Records that name this test process's pid are kept when they name its start time too and
    removed when they name another start time (a process that ended, whose pid was reused);
    records of another machine, and an older tasktrace's ``<task_id>.json``, are never touched.
    """
    live, parent = owner_id(), uuid.uuid4()
    machine, pid, start = live.split("-")
    # started at another time: another process that had this pid (ticks are exact, ms within 2 s)
    other = f"t{int(start[1:]) + 1}" if start.startswith("t") else str(int(start) - 3_600_000)
    reused = f"{machine}-{pid}-{other}"
    kept = [
        _record(tmp_path, live, parent, "live"),
        _record(tmp_path, f"00000000-{pid}-{start}", parent, "another machine"),
        tmp_path / f"{uuid.uuid4()}.json",
    ]
    kept[2].write_text(json.dumps({"parent_id": str(parent), "label": "older tasktrace"}))
    gone = _record(tmp_path, reused, parent, "reused pid")
    assert sweep(tmp_path).removed == ["reused pid"]
    assert not gone.exists()
    assert all(path.exists() for path in kept)


def test_records_of_a_finished_parent_go_unreported_and_a_running_parent_keeps_its_own(
    tmp_path: Path,
) -> None:
    """A stale record is reported only when its parent never finished merging it.

    The parent's marker says which: ``.done`` (it finished: removed without a word), a running
    process's (kept, even though the writer ended: the parent still merges it), an ended
    process's (removed and reported, and the marker with it).
    """
    ended = f"{owner_id().split('-')[0]}-{2**22 + 7}-1"  # no such pid (above pid_max's default)
    done, running, killed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    (tmp_path / f".parent-{done}.done").touch()
    (tmp_path / f".parent-{running}.{owner_id()}").touch()
    (tmp_path / f".parent-{killed}.{ended}").touch()
    merged = _record(tmp_path, ended, done, "merged")
    waiting = _record(tmp_path, ended, running, "waiting")
    lost = _record(tmp_path, ended, killed, "lost")
    assert sweep(tmp_path).removed == ["lost"]
    assert not merged.exists()
    assert not lost.exists()
    assert waiting.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        f".parent-{running}.{owner_id()}"
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="clock ticks since boot: Linux")
def test_a_step_of_the_system_clock_does_not_make_a_running_writer_look_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer is named by its start in ticks since boot, which no clock step moves.

    ``psutil``'s start time adds the boot time from ``/proc/stat``, which is the wall clock less
    the uptime: an NTP step or a resumed virtual machine moves it, and every running writer
    looked ended (their records swept before their parent merged them). The step is stood in
    for by moving the boot time psutil reads by an hour after the ids were made.
    """
    import psutil._pslinux  # the Linux reading this test moves

    live, parent = owner_id(), uuid.uuid4()  # made before the step
    script = (
        "import sys; from tasktrace.tree.spool_owners import owner_id\n"
        "print(owner_id(), flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        child_id = child.stdout.readline().strip()
        records = [_record(tmp_path, live, parent, "this process's")]
        records.append(_record(tmp_path, child_id, parent, "a running child's"))
        booted = psutil.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 3600.0)
        assert psutil.Process(child.pid).create_time() > booted + 3600  # the step is seen
        kept = sweep(tmp_path)
        child.communicate("")
    assert kept.labels == []
    assert all(path.exists() for path in records)


def test_the_suite_keeps_to_its_own_temporary_folder() -> None:
    """A killed run's leftovers in the machine's temporary folder never reach the tests' runs.

    The suite runs in a temporary folder of its own (:mod:`tests.suite_tmp`): a private spool
    folder that another program's killed run left in the machine's folder is neither removed
    nor reported by the tests' ``tasktrace run`` (whose stderr many tests compare line by line).
    Seen failing without it: a full run's ``test_a_command_that_cannot_start_gets_its_error_alone``
    got a "removed 1 task record ('train')" line left by a killed run of another session.
    """
    ended = f"{owner_id().split('-')[0]}-{2**22 + 7}-1"  # no such pid (above pid_max's default)
    planted = Path(tempfile.mkdtemp(prefix="tasktrace-spool-", dir=SYSTEM_TMP))
    try:
        parent = uuid.uuid4()
        (planted / f".owner.{ended}").touch()
        (planted / f".parent-{parent}.{ended}").touch()
        _record(planted, ended, parent, "another program's task")
        assert "removed" not in _next_run(clean_env())
    finally:
        shutil.rmtree(planted, ignore_errors=True)
