"""A LensKit project's folder as a new user writes it, and a task run in it in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LENSKIT_TOML = """\
# lenskit.toml, as LensKit documents it (shared by the project)
[random]
seed = 20250801

[machines.{machine}]
description = "the lab's box"

[machines.{machine}.power_queries]
system = "increase({metric}{{{{job='{{machine}}'}}}}[{{elapsed}}ms])"
"""

TASK_CODE = """\
import json, sys, time
{prelude}
import tasktrace
with tasktrace.Task("train") as task:
    time.sleep({seconds})
print(json.dumps({{"duration": task.duration, "system_power": task.system_power,
                  "source": task.system_energy_source, "machine": task.machine}}))
"""


def write_project(folder: Path, machine: str, metric: str, *, local_machine: bool = True) -> None:
    """Write lenskit.toml, lenskit.local.toml (``machine``, if asked) and a tasktrace.toml.

    tasktrace.toml holds one tasktrace setting only (``[prometheus] scrape_interval_s``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lenskit.toml").write_text(LENSKIT_TOML.format(machine=machine, metric=metric))
    if local_machine:
        (folder / "lenskit.local.toml").write_text(f'machine = "{machine}"\n')
    (folder / "tasktrace.toml").write_text("[prometheus]\nscrape_interval_s = 1\n")


def clean_environment(**extra: str) -> dict[str, str]:
    """Return os.environ less tasktrace's, LensKit's, OTel's and proxy variables, plus ``extra``."""
    drop = ("TASKTRACE_", "LK_", "OTEL_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in {"http_proxy", "https_proxy"}
    }
    env.update(extra)
    return env


def run_task(
    folder: Path,
    env: dict[str, str],
    *,
    python: str = sys.executable,
    prelude: str = "",
    seconds: float = 4.0,
) -> dict[str, object]:
    """Run one task of ``seconds`` in a fresh ``python`` in ``folder``; return its fields."""
    done = subprocess.run(
        [python, "-c", TASK_CODE.format(prelude=prelude, seconds=seconds)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    fields["stderr"] = done.stderr
    return fields
