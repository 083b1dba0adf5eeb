"""Signals sent to ``tasktrace run`` alone: passed on to the command, which decides the end.

See :mod:`tasktrace.cli.run_signals`. Each test runs the real command line in a fresh process
(its own session, as under a job manager; a controlling pseudo-terminal for Ctrl-C).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .export_helpers import clean_env

_START_S = 120.0  # an interpreter importing tasktrace: over 20 s on a loaded 2-core machine
_CLI = [sys.executable, "-m", "tasktrace.cli"]


def _default_signals() -> None:
    # a job started in the background by a shell without job control inherits SIGINT and
    # SIGQUIT ignored, and a signal ignored by run stays ignored (for the command too)
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def _started_run(folder: Path, command: list[str]) -> subprocess.Popen[bytes]:
    """Start ``tasktrace run -f run.json -- COMMAND`` (no terminal); return once it set up.

    COMMAND must touch ``ready`` in ``folder`` when set up.
    """
    proc = subprocess.Popen(
        [*_CLI, "run", "-q", "-f", "run.json", "--", *command],
        cwd=folder,
        env=clean_env(),
        start_new_session=True,
        preexec_fn=_default_signals,  # noqa: PLW1509 - a test; no threads fork here
    )
    deadline = time.monotonic() + _START_S
    while not (folder / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "ready").exists(), "the command never started"
    return proc


def _signal_run(folder: Path, signum: int, script: str) -> tuple[int, dict[str, object]]:
    """Run ``tasktrace run -f run.json -- sh -c SCRIPT``; once it touched ``ready``, signal run.

    Returns run's exit status and the task file. SCRIPT must touch ``ready`` when set up.
    """
    proc = _started_run(folder, ["sh", "-c", script])
    proc.send_signal(signum)
    code = proc.wait(timeout=30)
    return code, json.loads((folder / "run.json").read_text())


def test_a_command_answering_sigterm_with_its_own_status_keeps_it(tmp_path: Path) -> None:
    """SIGTERM passed on; the command saves its work and exits 3: run exits 3, cancelled.

    Before: run's exit status and the file's exit_code were 143, not the command's 3.
    """
    script = 'trap "exit 3" TERM; touch ready; sleep 60 & wait'
    code, task = _signal_run(tmp_path, signal.SIGTERM, script)
    assert code == 3
    assert (task["status"], task["exit_code"]) == ("cancelled", 3)
    assert task["error"] == "stopped by SIGTERM (exit status 3)"


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGQUIT, "SIGQUIT")]
)
def test_sigint_or_sigquit_sent_to_run_alone_stops_the_command(
    tmp_path: Path, signum: int, name: str
) -> None:
    """``kill -INT <run's pid>`` (no terminal in front): the command gets it, the run cancelled.

    Before: SIGINT was dropped (the command ran to its end, the run finished 0); SIGQUIT
    killed run at once, the file left ``running``.
    """
    started = time.monotonic()
    code, task = _signal_run(tmp_path, signum, "touch ready; exec sleep 60")
    assert time.monotonic() - started < 50  # the command stopped; it did not sleep its 60 s
    assert code == 128 + signum
    assert (task["status"], task["exit_code"]) == ("cancelled", 128 + signum)
    assert task["error"] == f"stopped by {name}"


def test_sigusr1_is_passed_on_to_the_command(tmp_path: Path) -> None:
    """SIGUSR1 to run (a checkpoint request, ``dd``'s progress) reaches the command, which goes on.

    Before: it killed run at once (its default action), the file left ``running``.
    """
    script = 'trap "echo asked > checkpoint" USR1; touch ready; sleep 3 & wait; wait'
    code, task = _signal_run(tmp_path, signal.SIGUSR1, script)
    assert (tmp_path / "checkpoint").read_text() == "asked\n"
    assert code == 0
    assert (task["status"], task["exit_code"]) == ("finished", 0)


_COUNTS_SIGINT = """
import signal, sys, time
from pathlib import Path
got = []
signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
Path("ready").touch()
end = time.monotonic() + 60
while not got and time.monotonic() < end:
    time.sleep(0.05)
time.sleep(2)  # a second SIGINT passed on by run would come in this time
Path("count").write_text(str(len(got)))
"""


def test_ctrl_c_on_the_terminal_reaches_the_command_once(tmp_path: Path) -> None:
    """Ctrl-C typed on run's terminal: the command gets one SIGINT, not a second from run.

    The terminal sends it to the whole foreground group, run and the command: run passes
    SIGINT on only when it is not in its terminal's foreground (a Python program would take a
    second ``KeyboardInterrupt`` in its clean-up). Seen failing with that check removed.
    """
    (tmp_path / "child.py").write_text(_COUNTS_SIGINT)
    env = clean_env(TERM="dumb")
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.chdir(tmp_path)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            argv = [*_CLI, "run", "-q", "-f", "run.json", "--", sys.executable, "child.py"]
            os.execve(sys.executable, argv, env)  # noqa: S606 - the child of pty.fork
        finally:
            os._exit(127)
    deadline = time.monotonic() + _START_S
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        if select.select([master], [], [], 0.05)[0]:
            os.read(master, 65536)
    assert (tmp_path / "ready").exists(), "the command never started"
    os.write(master, b"\x03")  # Ctrl-C
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # read until the run ends (its terminal then closes)
        if select.select([master], [], [], 1.0)[0]:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert (tmp_path / "count").read_text() == "1"
    assert os.waitstatus_to_exitcode(status) == 0
    task = json.loads((tmp_path / "run.json").read_text())
    assert (task["status"], task["exit_code"]) == ("finished", 0)


def test_sigint_to_runs_whole_group_without_a_terminal_reaches_the_command_once(
    tmp_path: Path,
) -> None:
    """``kill -INT -- -PGID`` (a supervisor, no terminal): the command gets one SIGINT.

    The command runs in a process group of its own there, so only run gets the group's
    signal and passes it on. Seen failing (count 2) with the command in run's group.
    """
    (tmp_path / "child.py").write_text(_COUNTS_SIGINT)
    proc = _started_run(tmp_path, [sys.executable, "child.py"])
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert (tmp_path / "count").read_text() == "1"
