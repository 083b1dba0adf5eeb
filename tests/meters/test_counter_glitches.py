"""Energy counters that step back without wrapping (firmware glitch, reset): None, one warning.

Issue 12 item 6: a RAPL ``energy_uj`` that stepped back once by 1 mJ, far from the wrap point,
made a 3 s task report 262,143 J (every backward step was taken as a full wrap). The same check
guards NVML's total-energy counter, which never wraps.
"""

from __future__ import annotations

import logging
import time

import pytest

from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings

from .energy_helpers import FakeGpu, RaplTree

ZONE = "intel-rapl:0"


def _glitch_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stepped back" in r.getMessage()]


@pytest.mark.usefixtures("install_energy")
def test_rapl_counter_stepping_back_1_mj_is_a_glitch_not_a_wrap(
    rapl_tree: RaplTree, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1 mJ step back mid-range: tasks spanning it get None (one warning); others are exact."""
    rapl_tree.zone(ZONE, "package-0", 50_000_000_000)  # 50 kJ into a 262 kJ range
    reset_settings(Settings.model_validate({"energy": {"rapl_root": rapl_tree.root}}))
    with caplog.at_level(logging.WARNING), Task("run") as run:
        with Task("before") as before:
            rapl_tree.advance(ZONE, 1_000_000)
        with Task("spanning") as spanning:
            rapl_tree.advance(ZONE, 3_000_000)
            spanning.update()  # refreshes (like the poller) read the counter before and after
            rapl_tree.set(ZONE, rapl_tree.get(ZONE) - 1_000)  # the firmware glitch
            spanning.update()
            rapl_tree.advance(ZONE, 2_000_000)
        with Task("after") as after:
            rapl_tree.advance(ZONE, 4_000_000)
    assert before.cpu_power == pytest.approx(1.0)
    assert spanning.cpu_power is None
    assert spanning.cpu_energy_source is None
    assert run.cpu_power is None  # the parent spans the glitch too
    assert after.cpu_power == pytest.approx(4.0)
    assert after.cpu_energy_source == "rapl"
    assert len(_glitch_warnings(caplog)) == 1, caplog.records


@pytest.mark.usefixtures("install_energy")
def test_rapl_counter_reset_to_zero_is_not_a_wrap(
    rapl_tree: RaplTree, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter reset (back to 0 mid-range, e.g. a driver reload) gives None, never ~262 kJ."""
    rapl_tree.zone(ZONE, "package-0", 120_000_000_000)
    reset_settings(Settings.model_validate({"energy": {"rapl_root": rapl_tree.root}}))
    with caplog.at_level(logging.WARNING):
        with Task("spanning") as spanning:
            rapl_tree.set(ZONE, 0)
            spanning.update()
            rapl_tree.advance(ZONE, 5_000_000)
        with Task("after") as after:
            rapl_tree.advance(ZONE, 2_000_000)
    assert spanning.cpu_power is None
    assert after.cpu_power == pytest.approx(2.0)
    assert len(_glitch_warnings(caplog)) == 1


@pytest.mark.usefixtures("install_energy")
def test_rapl_counter_that_really_wraps_is_still_counted(rapl_tree: RaplTree) -> None:
    """A step back that a wrap explains (0.1 J before the range, +0.5 J) still adds one range."""
    range_uj = 262_143_328_850
    rapl_tree.zone(ZONE, "package-0", range_uj - 100_000, range_uj)
    reset_settings(Settings.model_validate({"energy": {"rapl_root": rapl_tree.root}}))
    with Task("wrapping") as task:
        time.sleep(0.01)  # 0.5 J in 10 ms is 50 W: a plausible wrap
        assert rapl_tree.advance(ZONE, 500_000) == 1
    assert task.cpu_power == pytest.approx(0.5)


@pytest.mark.usefixtures("install_energy")
def test_nvml_counter_stepping_back_gives_none_once(
    fake_gpus: list[FakeGpu], caplog: pytest.LogCaptureFixture
) -> None:
    """NVML's energy counter never wraps: any step back (reset, glitch) gives None, one warning."""
    reset_settings(Settings(meters=["nvml"]))
    gpu = fake_gpus[0]
    assert gpu.energy_mj is not None
    with caplog.at_level(logging.WARNING):
        with Task("before") as before:
            gpu.energy_mj += 1_500
        with Task("spanning") as spanning:
            gpu.energy_mj -= 1  # one millijoule back
        with Task("spanning-again") as again:
            gpu.energy_mj = 10  # a GPU reset: the counter restarts near 0
            gpu.energy_mj += 2_000
        with Task("after") as after:
            gpu.energy_mj += 3_000
    assert before.gpu_power == pytest.approx(1.5)
    assert spanning.gpu_power is None
    assert spanning.gpu_energy_source is None
    assert again.gpu_power is None
    assert after.gpu_power == pytest.approx(3.0)
    assert after.gpu_energy_source == "nvml-counter"
    assert len(_glitch_warnings(caplog)) == 1, [r.getMessage() for r in caplog.records]
