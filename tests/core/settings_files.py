"""LensKit and tasktrace settings files as a project writes them, for the settings tests."""

from __future__ import annotations

from pathlib import Path

LENSKIT_TOML = """\
machine = "from-lenskit-toml"

[random]
seed = 42

[prometheus]
url = "http://prometheus.lab:9090"

[machines.labbox]
description = "the lab's box"
idle_watts = 95

[machines.labbox.power_queries]
system = "sum(increase(energy_joules_total{{job='{machine}'}}[{elapsed}ms]))"
"""
"""A project's lenskit.toml: machine, [random] (LensKit's alone), [prometheus], a machine."""


def write(folder: Path, name: str, text: str) -> None:
    """Write ``text`` to ``folder / name``."""
    (folder / name).write_text(text)
