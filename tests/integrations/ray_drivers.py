"""Running a Ray test's driver script as users run Ray: a real process, this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def pythonpath() -> str:
    """Return the checkout's ``src`` (workers import this tasktrace), then its root (tests)."""
    root = Path(__file__).resolve().parents[2]
    return os.pathsep.join([str(root / "src"), str(root)])


def run_driver(
    folder: Path, script: str, *args: str, drop: tuple[str, ...], env: Mapping[str, str]
) -> str:
    """Write ``script`` as ``folder/driver.py`` and run it there; return its stderr.

    The environment is this process's, less the variables starting with a ``drop`` prefix,
    plus ``env`` and :func:`pythonpath`. The driver's stderr (Ray's own output) is written to
    this process's stderr, as pytest shows a failing test's.

    Raises:
        AssertionError: The driver exited non-zero (the end of its stderr in the message).
    """
    (folder / "driver.py").write_text(script)
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full.update(env, PYTHONPATH=pythonpath())
    driver = subprocess.run(
        [sys.executable, "driver.py", *args],
        check=False,  # its stderr goes in the assertion below
        cwd=folder,
        env=full,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    sys.stderr.write(driver.stderr)
    assert driver.returncode == 0, driver.stderr[-4000:]
    return driver.stderr
