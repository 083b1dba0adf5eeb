"""The live panel of ``tasktrace run``, driven in a real pseudo-terminal and through a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent("""
    import time
    from tasktrace import Task
    with Task("outer-step"):
        with Task("inner-step"):
            block = bytearray(60_000_000)
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                sum(range(10_000))
""")


def _env(rows: int = 40, columns: int = 140) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    env.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    return env


def _run_in_pty(
    argv: list[str], cwd: Path, timeout_s: float = 120.0, rows: int = 40, columns: int = 140
) -> str:
    """Run ``argv`` with a pty as stdin/stdout/stderr; return everything it wrote (decoded).

    Read until the output ends (``timeout_s`` is only for a run that hangs: 30 s ran out on
    a loaded 2-core machine, where two interpreters importing tasktrace took that long).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = _env(rows, columns)
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:  # it hung (the test fails): leave no process behind
            proc.kill()
        proc.wait(timeout=10)
    return b"".join(chunks).decode("utf-8", "replace")


def test_panel_in_a_terminal_shows_figures_and_running_tasks(tmp_path: Path) -> None:
    """On a terminal, run shows elapsed, CPU time, RSS now, peak RSS and the child's tasks."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = _run_in_pty(
        [sys.executable, "-m", "tasktrace.cli", "run", "--", sys.executable, str(script)], tmp_path
    )
    assert "tasktrace run:" in out
    for figure in ("elapsed", "CPU time", "RSS now", "peak RSS"):
        assert figure in out, figure
    assert "inner-step" in out  # from the child's spool record, while it ran
    assert "running" in out


def test_piped_output_has_no_panel(tmp_path: Path) -> None:
    """With stderr piped, run prints only the final tree: no panel, no cursor control codes."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("3.0", "1.5"))
    run = subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", "run", "--", sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,  # a run that hangs (the CPU-bound child takes seconds when loaded)
        check=True,
    )
    assert run.stdout == ""
    assert "tasktrace run:" not in run.stderr
    assert "elapsed" not in run.stderr
    assert "\x1b[" not in run.stderr  # no cursor movement or colour
    assert "finished" in run.stderr  # the final tree is still printed


PRINTING_CHILD = textwrap.dedent("""
    import time
    from tasktrace import Task
    with Task("train"):
        for epoch in range(4):
            with Task(f"epoch {epoch}"):
                time.sleep(0.4)
            print(f"epoch {epoch}: loss {1 / (epoch + 1):.3f}", flush=True)
""")


def test_command_output_stays_on_screen_above_the_panel(tmp_path: Path) -> None:
    """The command's own lines survive the panel's redraws (a terminal emulator's final screen)."""
    import pyte

    script = tmp_path / "child.py"
    script.write_text(PRINTING_CHILD)
    out = _run_in_pty(
        [
            sys.executable,
            "-m",
            "tasktrace.cli",
            "run",
            "-l",
            "training",
            "--",
            sys.executable,
            str(script),
        ],
        tmp_path,
    )
    screen = pyte.Screen(140, 40)
    pyte.Stream(screen).feed(out.replace("\n", "\r\n") if "\r\n" not in out else out)
    text = "\n".join(screen.display)
    for epoch in range(4):
        assert f"epoch {epoch}: loss" in text, text
    assert "training" in text  # the task tree printed at the end


MANY_TASKS_CHILD = textwrap.dedent("""
    import time
    from tasktrace import ContextThreadPoolExecutor, Task
    def work(i):
        with Task(f"worker task {i} with a label long enough to wrap in a narrow terminal"):
            time.sleep(0.2 if i < 28 else 3.0)
    with Task("sweep"):
        with ContextThreadPoolExecutor(30) as pool:
            list(pool.map(work, range(30)))
""")


def test_the_panel_never_outgrows_the_terminal_and_shows_the_running_tasks(
    tmp_path: Path,
) -> None:
    """A tree taller than the terminal: each frame fits it, so the panel can be erased.

    The panel showed every task the child had started, finished ones too, and rich draws its
    last frame in full when it stops: 30 tasks of wrapped labels made a 124-line panel on a
    20-line terminal, printed twice over the command's output and never erased.
    """
    rows = 20
    script = tmp_path / "child.py"
    script.write_text(MANY_TASKS_CHILD)
    argv = [sys.executable, "-m", "tasktrace.cli", "run", "--", sys.executable, str(script)]
    out = _run_in_pty(argv, tmp_path, rows=rows, columns=60)
    frames = [f[: f.index("╯")] for f in out.split("╭")[1:] if "╯" in f]
    assert frames  # the panel was drawn
    assert max(f.count("\n") + 1 for f in frames) < rows
    # a frame shows the tasks still running, without those that finished (at 0.2 s)
    assert any("worker task 29" in f and "worker task 3 " not in f for f in frames)


def test_a_command_that_exited_shows_no_rss_now() -> None:
    """Once the command has exited (not yet reaped), the panel keeps its peak, not "RSS now 0 B"."""
    from rich.console import Console

    from tasktrace import Task
    from tasktrace.cli.live import LivePanel

    screen = Console(file=io.StringIO(), width=160, height=20, force_terminal=True)
    panel = LivePanel(Task("run"), screen)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    try:
        panel.start(child.pid)
        time.sleep(0.4)  # drawn (sampled) while the command runs
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, a zombie: not reaped
        page = Console(file=io.StringIO(), width=160, height=20)
        page.print(panel.render())
        last = page.file.getvalue()  # type: ignore[attr-defined]
    finally:
        panel.stop()
        child.wait()
    assert "peak RSS" in last, last
    assert "RSS now" not in last, last


MARKUP_CHILD = textwrap.dedent("""
    import time
    from tasktrace import Task
    with Task("train with a label long enough to wrap inside a sixty-column panel, twice over"):
        for epoch in range(6):
            with Task(f"epoch {epoch}"):
                time.sleep(0.6)
            print(f"epoch {epoch} done", flush=True)
""")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_panel_drawn_after_a_line_of_output_is_the_same_panel(tmp_path: Path) -> None:
    """Each frame drawn with the command's output has the panel's markup and wrapping.

    The relay printed each line with ``markup=False, soft_wrap=True``; rich draws the panel
    after the line with the same options, so those frames showed ``[bold]train[/]
    [cyan]running[/]`` as text and cut the labels instead of wrapping them, while the timed
    redraws in between were right (persona report: 14 of 56 tmux captures).
    """
    script = tmp_path / "child.py"
    script.write_text(MARKUP_CHILD)
    argv = [sys.executable, "-m", "tasktrace.cli", "run", "--", sys.executable, str(script)]
    out = _ANSI.sub("", _run_in_pty(argv, tmp_path, rows=30, columns=60))
    frames = [f[: f.index("╯")] for f in out.split("╭")[1:] if "╯" in f]
    assert any("train with" in f for f in frames)  # the child's tree was drawn
    for frame in frames:
        assert "[/]" not in frame, frame
        assert "[bold]" not in frame, frame
        if "train with" in frame:
            assert "twice over" in frame, frame  # wrapped, not cut at the panel's edge
    assert "epoch 5 done" in out
