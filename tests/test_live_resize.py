"""A window resize reaches the command under ``tasktrace run``'s live panel.

The command writes to a pseudo-terminal of ``run``'s own; it had the terminal's size at start
and kept it, so a resized window left tqdm and rich drawing at the old width.
"""

from __future__ import annotations

import fcntl
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

ROWS = 30

WIDTHS = textwrap.dedent("""
    import os, signal, sys, time
    def report(signum, frame):
        print(f"columns {os.get_terminal_size(1).columns}", flush=True)
    signal.signal(signal.SIGWINCH, report)
    print("ready", flush=True)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        time.sleep(0.05)
""")


def _size(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))


def _read_until(master: int, wanted: bytes, seen: bytearray, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.05)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: everything on the terminal has exited
                break
            if not chunk:
                break
            seen += chunk
    return wanted in seen


def test_a_resized_window_gives_the_command_its_new_width(tmp_path: Path) -> None:
    """After the user's terminal goes from 100 to 70 columns, the command reads 70.

    ``run`` is started as a terminal's foreground job is: in a session whose controlling
    terminal is the user's, so a resize signals it (``SIGWINCH``). Seen failing before the
    fix: the command, signalled by the kernel too, read the 100 columns it started with.
    """
    script = tmp_path / "widths.py"
    script.write_text(WIDTHS)
    master, slave = pty.openpty()
    _size(slave, 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    env.update(TERM="xterm-256color")
    for name in ("COLUMNS", "LINES", "NO_COLOR"):
        env.pop(name, None)

    def controlling_terminal() -> None:  # after start_new_session's setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    argv = [sys.executable, "-m", "tasktrace.cli", "run", "--", sys.executable, str(script)]
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        preexec_fn=controlling_terminal,  # noqa: PLW1509 - no threads of ours run yet
    )
    os.close(slave)
    seen = bytearray()
    try:
        assert _read_until(master, b"ready", seen, timeout_s=30.0), seen.decode(errors="replace")
        _size(master, 70)  # the user's window is made narrower
        assert _read_until(master, b"columns ", seen, timeout_s=10.0), seen.decode(errors="replace")
        time.sleep(0.5)  # a second report (run's own SIGWINCH to the command) comes right after
        _read_until(master, b"\0never\0", seen, timeout_s=0.5)
        text = seen.decode(errors="replace")
        reported = re.findall(r"columns (\d+)", text)
        assert reported, text
        assert reported[-1] == "70", text  # what the command reads once the resize is through
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(master)
