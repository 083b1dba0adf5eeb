"""Running the ``tasktrace`` command in a fresh process, as from a shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .export_helpers import clean_env

__all__ = ["run_cli"]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tasktrace ARGS`` with stdout and stderr pipes (not a terminal) and no ``COLUMNS``.

    Started through ``sh``, which forks it, as a shell does: a process started straight from
    the test process inherits that process's peak RSS (Linux keeps ``ru_maxrss`` across
    ``vfork`` + ``exec``), and ``tasktrace run`` would then see a command's peak as no larger
    than its own and leave it unset. ``env`` defaults to :func:`clean_env`.
    """
    env = dict(clean_env() if env is None else env)
    env.pop("COLUMNS", None)
    return subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m", "tasktrace.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
