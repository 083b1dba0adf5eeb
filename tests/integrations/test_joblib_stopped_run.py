"""`tasktrace run` of a joblib sweep stopped midway (Ctrl-C, SIGTERM): tree, warning, CPU.

A real ``tasktrace run`` of a real joblib program (the traced loky backend, ``n_jobs=2``, one
fold a batch, every batch dispatched at once), stopped once folds 0 and 1 ended and folds 2 and
3 run (each fold makes a mark file as it starts, another as it ends). The printed tree must list
the tasks the file holds; the joblib warning must count exactly the started folds whose records
did not come home (none: no warning) and the queued ones that never started; no fold may start
after the stop (after SIGTERM loky's workers outlive the driver and end folds 2 and 3); the
command's CPU in no task must hold the driver's own CPU outside its tasks (its workers not
reaped after SIGTERM: their tasks' CPU is not in ``wait4``'s figure).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("joblib", reason="the joblib integration needs joblib installed")

from tasktrace import Task, TaskStatus

from ..export_helpers import clean_env

DRIVER_SPIN_S = 0.3
"""CPU seconds the driver burns before its sweep, in no task."""
FOLD_SPIN_S = 1.2
"""CPU seconds folds 0 and 1 burn (the later folds spin until stopped): together more than the
driver's own CPU, so subtracting them from a ``wait4`` figure without them leaves 0."""
LATER_SPIN_S = 2.5
"""CPU seconds the later folds burn: folds 2 and 3 are still running when the sweep is stopped
0.5 s after they started, and end soon after (loky's workers outlive a driver stopped by
SIGTERM), when a worker would take a queued fold."""
FOLDS = 8

_PROGRAM = """
import os, sys, time
import joblib
from joblib import Parallel, delayed
import tasktrace.integrations.joblib
from tasktrace import Task

MARKS, FOLDS = sys.argv[1], int(sys.argv[4])
DRIVER_S, FOLD_S, LATER_S = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[5])

def spin(seconds):
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        pass

def fold(i):
    with Task(f"fold {i}"):
        open(os.path.join(MARKS, f"started-{i}"), "w").close()
        spin(FOLD_S if i < 2 else LATER_S)
    open(os.path.join(MARKS, f"ended-{i}"), "w").close()
    return i

if __name__ == "__main__":
    spin(DRIVER_S)
    joblib.parallel_config(backend="tasktrace")
    with Task("cv"):
        Parallel(n_jobs=2, batch_size=1, pre_dispatch="all")(
            delayed(fold)(i) for i in range(FOLDS)
        )
"""

_TREE_FOLD = re.compile(r"^[\s│]*[├└]── (fold \d+)  ")
_LOST = re.compile(r"tasktrace: a joblib call .*?(\d+) batch\(es\).*?(\d+) queued batch")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _started(marks: Path) -> set[str]:
    return {f"fold {p.name.removeprefix('started-')}" for p in marks.glob("started-*")}


def _stopped_run(tmp_path: Path, how: signal.Signals) -> tuple[Task, str, set[str], set[str]]:
    """Run the sweep, stop it with ``how`` once folds 2 and 3 run.

    SIGINT goes to the process group (a terminal's Ctrl-C), SIGTERM to ``tasktrace run``
    alone (a batch scheduler), which passes it on to the command.

    Returns:
        The file, ``tasktrace run``'s stderr, the folds started when it ended, and those
        started once the workers still alive ended their folds (SIGTERM: folds 2 and 3).
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    program = tmp_path / "sweep.py"
    program.write_text(_PROGRAM)
    out = tmp_path / "run.json"
    command = [sys.executable, str(program), str(marks)]
    command += [str(DRIVER_SPIN_S), str(FOLD_SPIN_S), str(FOLDS), str(LATER_SPIN_S)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:  # a file: workers left behind keep a pipe open
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasktrace.cli", "run", "-f", str(out), "--", *command],
            env=clean_env(),
            cwd=tmp_path,
            start_new_session=True,
            preexec_fn=_default_sigint,  # noqa: PLW1509 - a test; no threads fork here
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
    try:
        # a worker starts fold 2 or 3 only after it sent fold 0's or 1's results home
        deadline = time.monotonic() + 120
        running = [marks / "started-2", marks / "started-3"]
        while not all(p.exists() for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(p.exists() for p in running), "folds 2 and 3 never started"
        time.sleep(0.5)  # folds 0 and 1's records reach the driver's tree
        if how is signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(how)
        proc.wait(timeout=60)
        started = _started(marks)
        if how is signal.SIGTERM:  # the orphaned workers end folds 2 and 3, take no other
            ended = [marks / "ended-2", marks / "ended-3"]
            deadline = time.monotonic() + 4 * LATER_SPIN_S
            while not all(p.exists() for p in ended) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a queued fold a worker took would have started by now
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left: workers SIGTERM left behind
        proc.wait()
    stderr = log.read_text()
    return Task.model_validate_json(out.read_text()), stderr, started, _started(marks)


def _folds(task: Task) -> set[str]:
    (cv,) = task.subtasks
    return {t.label for t in cv.subtasks}


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_sweep_prints_its_file_counts_lost_folds_keeps_the_drivers_cpu(
    tmp_path: Path, how: signal.Signals
) -> None:
    """Printed tree = file's; the warning counts lost and queued folds; none starts after.

    The warning counts the started folds not in the file (none: no warning) and the queued
    ones, which never start, even in workers that outlive a driver stopped by SIGTERM; the driver's
    spin outside tasks is in its CPU in no task (or there is no figure), never 0. After
    Ctrl-C joblib kills and reaps the workers: ``wait4``'s figure holds their CPU and their
    tasks' is subtracted. After SIGTERM the driver dies without reaping them: their tasks'
    CPU is not in the figure, and subtracting it wiped the driver's out (0).
    """
    task, stderr, started, started_later = _stopped_run(tmp_path, how)
    assert started_later == started  # no queued fold started after the stop
    assert task.status is TaskStatus.CANCELLED
    in_file = _folds(task)
    assert {"fold 0", "fold 1"} <= in_file, in_file
    printed = {m.group(1) for line in stderr.splitlines() if (m := _TREE_FOLD.match(line))}
    assert printed == in_file, stderr

    lost = started - in_file  # folds that started and whose records never came home
    counts = [
        (int(m.group(1)), int(m.group(2)))
        for line in stderr.splitlines()
        if (m := _LOST.search(line))
    ]
    if lost:  # the folds out that had not started were queued
        assert counts == [(len(lost), FOLDS - len(started))], (lost, stderr)
    else:
        assert counts == [], (started, in_file, stderr)

    reported = sum(t.cpu_time or 0.0 for t in task.subtasks[0].subtasks)
    assert reported >= 2 * FOLD_SPIN_S  # folds 0 and 1 reported their CPU
    in_no_task = task.children_cpu_time_s
    if how is signal.SIGINT:
        assert in_no_task is not None  # the workers were reaped: the figure is known
    assert in_no_task is None or in_no_task >= DRIVER_SPIN_S, in_no_task


def test_folders_of_marks_of_ended_drivers_are_swept(tmp_path: Path) -> None:
    """A stopped driver's folder of batch marks is removed by a later driver; a live one's kept.

    The marks live in ``/dev/shm`` (32 µs a batch, not 160 µs on a disk): a driver stopped by a
    signal leaves its folder there, and nothing else would ever remove it.
    """
    from tasktrace.integrations.joblib_calls import MARKS_PREFIX, sweep_marks

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f"{MARKS_PREFIX}{ended.pid}-abc"
    live = tmp_path / f"{MARKS_PREFIX}{os.getpid()}-def"
    other = tmp_path / "someone-else-7"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "0").touch()
    sweep_marks(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_a_queued_batch_of_a_dead_driver_swept_by_another_does_not_start(tmp_path: Path) -> None:
    """A driver stopped by SIGTERM, then its folder swept by a later driver: no batch starts.

    The aborting mark went with the folder; an orphaned worker taking a queued batch found no
    mark and ran it, as if the call were still on (seen in CI while another program's joblib
    call swept ``/dev/shm``: folds 4 and 5 started after the stop).
    """
    from tasktrace.integrations.joblib_calls import (
        MARKS_PREFIX,
        CallBook,
        batch_starts,
        sweep_marks,
    )

    book = CallBook()
    try:
        _, running = book.submitted()
        _, queued = book.submitted()
        assert running is not None
        assert queued is not None
        assert book.folder is not None
        assert batch_starts(running)  # started before the stop
        book.aborting()  # the SIGTERM handler's mark
        ended = subprocess.Popen([sys.executable, "-c", "pass"])
        ended.wait()  # the folder as the dead driver's: a later driver sweeps it
        swept = os.path.join(os.path.dirname(book.folder), f"{MARKS_PREFIX}{ended.pid}-x")
        os.rename(book.folder, swept)
        sweep_marks(os.path.dirname(book.folder))
        assert not os.path.exists(swept)
        assert not batch_starts(os.path.join(swept, os.path.basename(queued)))
    finally:
        book.close()
