"""A forked child (a ``multiprocessing`` pool worker) dies on SIGTERM even when stuck in C code.

tasktrace's SIGTERM handler is Python code: it runs only when the main thread gets back to the
interpreter. A child forked from a process with threads may block forever in C on a lock that
another thread of the parent held at the fork (an I/O buffer's lock, here); ``Pool.terminate()``
then sends SIGTERM and waits. The child must not keep the parent's handler, so that SIGTERM
ends it as it would without tasktrace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

SCRIPT = textwrap.dedent(
    r"""
    import fcntl, io, multiprocessing, os, signal, struct, sys, termios, threading, time
    from tasktrace import Task

    with Task("parent"):  # installs tasktrace's SIGTERM handler in this (main) thread
        pass
    read_fd, write_fd = os.pipe()
    writer = io.BufferedWriter(io.FileIO(write_fd, "w"), buffer_size=1)
    # A thread blocks inside writer.write (nobody reads the pipe), holding the buffer's lock.
    threading.Thread(target=lambda: writer.write(b"x" * 10_000_000), daemon=True).start()
    def in_pipe():
        return struct.unpack("i", fcntl.ioctl(read_fd, termios.FIONREAD, b"\0" * 4))[0]
    deadline = time.monotonic() + 30
    while not in_pipe() and time.monotonic() < deadline:  # the thread is inside its write
        time.sleep(0.01)

    def child():
        writer.write(b"y")  # blocks in C on the lock the parent's thread held at the fork

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=child)
    proc.start()
    time.sleep(1.0)  # the child is now stuck in C
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    print(proc.exitcode, flush=True)
    if proc.exitcode is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    os._exit(0)
    """
)


def test_forked_child_stuck_in_c_code_dies_on_sigterm() -> None:
    """SIGTERM ends a forked child blocked in C within 10 s (exit code -15), handler or not.

    The fork waits until the parent's thread is inside its write (bytes in the pipe), not a
    fixed 0.5 s: forked before, the child would write its byte and exit 0.
    """
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(-signal.SIGTERM)
