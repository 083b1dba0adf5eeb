"""Energy in total and emissions: nothing counted twice, intensity from settings (core.carbon)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tasktrace
from tasktrace.cli import main
from tasktrace.core.carbon import SHORT_TASK_FLAGS, energy_parts, measure_values
from tasktrace.core.settings import reset_settings


def _energy_file(path: Path, **fields: Any) -> Path:
    task = {"label": "train", "status": "finished", "duration": 100.0, **fields}
    path.write_text(json.dumps(task))
    return path


def test_carbon_intensity_comes_from_the_machine_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine's ``carbon_intensity_g_per_kwh`` in tasktrace.toml applies to its tasks only."""
    (tmp_path / "tasktrace.toml").write_text(
        "[machines.lab]\ncarbon_intensity_g_per_kwh = 400\n"
    )  # the test runs in tmp_path, where settings are read from
    # Settings are read once per process, at first use: an earlier test's exporter thread
    # (get_settings() in the span pipeline) may have read them here before the file existed.
    reset_settings()
    lab = _energy_file(tmp_path / "lab.json", machine="lab", cpu_power=3.6e6)
    other = _energy_file(tmp_path / "other.json", machine="cloud", cpu_power=3.6e6)
    assert main(["show", str(lab)]) == 0
    assert "CO₂e 400 g" in capsys.readouterr().out
    assert main(["show", str(other)]) == 0
    assert "CO₂e" not in capsys.readouterr().out
    frame = tasktrace.read_tasks([lab, other])
    assert frame["emissions_g"].iloc[0] == pytest.approx(400.0)
    assert pd.isna(frame["emissions_g"].iloc[1])


def test_total_energy_counts_nothing_twice(tmp_path: Path) -> None:
    """energy_j: system energy if measured, else CPU + GPU + DRAM (DRAM not with psys)."""
    files = [
        _energy_file(tmp_path / "a.json", system_power=500.0, cpu_power=200.0, gpu_power=100.0),
        _energy_file(tmp_path / "b.json", cpu_power=200.0, gpu_power=100.0, dram_energy_j=10.0),
        _energy_file(
            tmp_path / "c.json", cpu_power=200.0, cpu_energy_scope="platform", dram_energy_j=10.0
        ),
        _energy_file(tmp_path / "d.json"),
    ]
    energy = tasktrace.read_tasks(files)["energy_j"].tolist()
    assert energy[:3] == [500.0, 310.0, 200.0]
    assert pd.isna(energy[3])  # nothing measured: missing, never 0


@pytest.mark.parametrize("system", [None, False, True])
@pytest.mark.parametrize("cpu", [None, False, True])
@pytest.mark.parametrize("gpu", [None, False, True])
@pytest.mark.parametrize("scope", ["package", "platform"])
def test_the_total_is_approximate_exactly_where_a_part_it_counts_is(
    system: bool | None, cpu: bool | None, gpu: bool | None, scope: str
) -> None:
    """``energy_short_task``: any flag of the energies the total counts (energy_parts), no other.

    The system energy alone where measured (a flagged CPU figure beside it does not make the
    total approximate); DRAM with the CPU's flag, where the total counts it; ``None`` where
    the total counts nothing.
    """
    fields: dict[str, Any] = {"label": "t", "cpu_energy_scope": scope, "dram_energy_j": 1.0}
    for name, flag, joules in (("system", system, 9.0), ("cpu", cpu, 4.0), ("gpu", gpu, 2.0)):
        if flag is not None:  # a flag only where the energy was measured
            fields |= {f"{name}_power": joules, f"{name}_energy_short_task": flag}
    task = tasktrace.Task.model_validate(fields)  # as a file loads it
    values = measure_values(task)
    counted = energy_parts(task)
    assert values["dram_energy_short_task"] is (cpu is True)
    expected = any(values[SHORT_TASK_FLAGS[column]] for column in counted) if counted else None
    assert values["energy_short_task"] is expected, (counted, values)
