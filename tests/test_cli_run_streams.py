"""``tasktrace`` when its standard streams fail: a terminal that hangs up, a full disk, closed.

The task is always finished and its file written, whatever the terminal does, and output that
cannot be written never changes ``run``'s exit status (the command's); the other commands end
with one error line, no traceback (:mod:`tasktrace.cli.boundary`). Each test runs the real
command line in a fresh process (a controlling pseudo-terminal where the live panel matters).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .export_helpers import clean_env

_START_S = 120.0  # an interpreter importing tasktrace: over 20 s on a loaded 2-core machine
_CLI = [sys.executable, "-m", "tasktrace.cli"]


def _hang_up_run(folder: Path, command: list[str], *, stdout_to: Path | None = None) -> int:
    """Run ``tasktrace run -f run.json COMMAND`` on its own terminal; hang it up mid-run.

    The terminal is the controlling terminal of ``run`` (a session leader, as under ``ssh``),
    which the kernel signals (SIGHUP) when the terminal's other end is closed. The hang-up
    comes once the command has touched ``ready`` and (without ``stdout_to``) the live panel
    was drawn. Returns ``run``'s exit status.
    """
    env = clean_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    pid, master = pty.fork()
    if pid == 0:  # the child: run on the terminal (stdout to a file if asked)
        try:
            os.chdir(folder)
            if stdout_to is not None:
                os.dup2(os.open(stdout_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.execve(sys.executable, [*_CLI, "run", "-f", "run.json", "--", *command], env)  # noqa: S606 - the child of pty.fork
        finally:
            os._exit(127)
    seen = b""
    deadline = time.monotonic() + _START_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
        panel = stdout_to is not None or b"tasktrace run:" in seen
        if panel and (folder / "ready").exists():
            break
    assert (folder / "ready").exists(), seen.decode(errors="replace")
    os.close(master)  # hang up
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _record(folder: Path) -> tuple[str, int | None, str | None]:
    task = json.loads((folder / "run.json").read_text())
    return task["status"], task.get("exit_code"), task.get("error")


def test_a_terminal_hang_up_stops_the_command_and_the_run_is_recorded(tmp_path: Path) -> None:
    """The terminal goes away under the live panel: the command stopped, the run cancelled, 129.

    Before: the panel's last draw failed (EIO) before the task was finished: the file said
    ``running`` for good, and ``run`` exited 1.
    """
    code = _hang_up_run(tmp_path, ["sh", "-c", "touch ready; exec sleep 60"])
    assert code == 129
    assert _record(tmp_path) == ("cancelled", 129, "stopped by SIGHUP")


def test_a_command_that_survives_the_hang_up_gives_the_run_its_status(tmp_path: Path) -> None:
    """A command ignoring SIGHUP that goes on and exits 0: the run is finished, exit status 0.

    Before: exit status 1 and a file left ``running``.
    """
    command = ["sh", "-c", "trap '' HUP; touch ready; sleep 4; echo done > survived"]
    assert _hang_up_run(tmp_path, command) == 0
    assert (tmp_path / "survived").read_text() == "done\n"
    assert _record(tmp_path) == ("finished", 0, None)


def test_a_hang_up_without_the_panel_keeps_the_exit_status(tmp_path: Path) -> None:
    """Standard output to a file (no panel), standard error the terminal that hangs up: 129.

    Before: the record was right, but printing the tree failed and ``run`` exited 1.
    """
    code = _hang_up_run(
        tmp_path, ["sh", "-c", "touch ready; exec sleep 60"], stdout_to=tmp_path / "out"
    )
    assert code == 129
    assert _record(tmp_path) == ("cancelled", 129, "stopped by SIGHUP")


@pytest.mark.parametrize(
    ("command", "code", "status"),
    [
        (["true"], 0, "finished"),
        (["sh", "-c", "exit 3"], 3, "failed"),
        (["no-such-program-tasktrace"], 127, "failed"),
    ],
    ids=["exit-0", "exit-3", "not-found"],
)
def test_run_with_standard_error_on_a_full_disk_keeps_the_commands_status(
    tmp_path: Path, command: list[str], code: int, status: str
) -> None:
    """``tasktrace run ... 2>/dev/full`` (ENOSPC): the exit status is the command's, recorded.

    Before: exit status 1 whatever the command did (only a broken pipe was handled).
    """
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*_CLI, "run", "-f", "run.json", "--", *command],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=full,
            timeout=_START_S,
            check=False,
        )
    assert done.returncode == code
    assert _record(tmp_path)[:2] == (status, code)


@pytest.mark.parametrize(
    "args",
    [
        ["show", "run.json"],
        ["export", "run.json", "--format", "chrome", "-o", "-"],
        ["config"],
        ["compare", "run.json", "run.json"],
        ["table", "run.json"],
        ["--version"],
    ],
)
def test_standard_output_on_a_full_disk_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    """``tasktrace show run.json >/dev/full``: one error line naming the reason, exit 1.

    Before: a traceback ending in ``OSError: [Errno 28]``, exit 1.
    """
    (tmp_path / "run.json").write_text(
        '{"label": "train", "status": "finished", "start_time": 1.7e9, "duration": 1}'
    )
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*_CLI, *args],
            cwd=tmp_path,
            env=clean_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=_START_S,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write standard output: No space left on device\n"


_WRITES = (
    "import os, sys; f = os.open('data.txt', os.O_WRONLY | os.O_CREAT); os.write(f, b'DATA');"
    "os.write(int(sys.argv[1]), b'progress')"
)


@pytest.mark.parametrize("fd", [1, 2])
def test_a_closed_standard_stream_reaches_the_command_on_dev_null(tmp_path: Path, fd: int) -> None:
    """``tasktrace run ... >&-`` (or ``2>&-``) alone: the command gets ``/dev/null`` there.

    Before: the descriptor reached the command closed, so the first file it opened became its
    standard output, and its progress messages were written into its data.
    """
    line = f'"$@" {fd}>&-'
    command = [sys.executable, "-c", _WRITES, str(fd)]
    done = subprocess.run(
        ["sh", "-c", line, "sh", *_CLI, "run", "-q", "--", *command],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=_START_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data.txt").read_bytes() == b"DATA"
