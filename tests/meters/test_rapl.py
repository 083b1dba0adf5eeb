"""RAPL meter on fixture powercap trees: zone choice, wraps, psys, permissions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.meters import rapl, reset_meters
from tasktrace.meters.poller import Poller, get_poller
from tasktrace.meters.rapl import RaplMeter, find_zones, select_zones

from .energy_helpers import RaplTree


def _two_packages_with_dram(tree: RaplTree) -> None:
    tree.zone("intel-rapl:0", "package-0", 10_000_000)
    tree.zone("intel-rapl:0:0", "core", 5_000_000)
    tree.zone("intel-rapl:0:1", "uncore", 1_000_000)
    tree.zone("intel-rapl:0:2", "dram", 2_000_000)
    tree.zone("intel-rapl:1", "package-1", 20_000_000)
    tree.zone("intel-rapl:1:0", "core", 7_000_000)
    tree.zone("intel-rapl:1:1", "dram", 3_000_000)


def test_two_packages_and_dram_sum_packages_only(rapl_tree: RaplTree, poller: Poller) -> None:
    """cpu_power sums package zones (not their core/uncore children); DRAM is reported apart."""
    _two_packages_with_dram(rapl_tree)
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    assert meter.available()
    snap = meter.start()
    deltas = {
        "intel-rapl:0": 4_000_000,
        "intel-rapl:0:0": 3_000_000,
        "intel-rapl:0:1": 500_000,
        "intel-rapl:0:2": 250_000,
        "intel-rapl:1": 6_000_000,
        "intel-rapl:1:0": 5_000_000,
        "intel-rapl:1:1": 125_000,
    }
    for zone_id, delta in deltas.items():
        rapl_tree.advance(zone_id, delta)
    reading = meter.read(snap, 2.0, final=True)
    expected_cpu_j = (deltas["intel-rapl:0"] + deltas["intel-rapl:1"]) / 1e6
    expected_dram_j = (deltas["intel-rapl:0:2"] + deltas["intel-rapl:1:1"]) / 1e6
    assert reading["cpu_power"] == pytest.approx(expected_cpu_j)
    assert reading["dram_energy_j"] == pytest.approx(expected_dram_j)
    assert reading["cpu_energy_source"] == "rapl"
    assert reading["cpu_energy_scope"] == "package"
    assert reading["cpu_energy_short_task"] is False


def test_nested_layout_and_mmio_duplicates_are_not_counted_twice(rapl_tree: RaplTree) -> None:
    """Zones found both flat and nested count once; intel-rapl-mmio packages yield to MSR ones."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    rapl_tree.zone("intel-rapl:0:0", "dram", nested=True)
    rapl_tree.zone("intel-rapl-mmio:0", "package-0")
    cpu, scope, dram = select_zones(find_zones(rapl_tree.root))
    assert [z.zone_id for z in cpu] == ["intel-rapl:0"]
    assert [z.zone_id for z in dram] == ["intel-rapl:0:0"]
    assert scope == "package"


class _Clock:
    """A monotonic clock the test moves: counter readings are judged by the time between them."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _wrap_task(
    tree: RaplTree, meter: RaplMeter, clock: _Clock, steps: list[int], between
) -> tuple[float, int]:
    snap = meter.start()
    wraps = 0
    for step in steps:
        clock.now_s += 1.0  # first the time, then the energy: 1 s allows 1 kJ at MAX_POWER_W
        wraps += tree.advance("intel-rapl:0", step)
        between()
    reading = meter.read(snap, 10.0, final=True)
    return reading["cpu_power"], wraps


@pytest.mark.parametrize("n_steps", [2, 6])
def test_counter_wrapping_during_a_task_is_exact(
    rapl_tree: RaplTree, poller: Poller, n_steps: int
) -> None:
    """A counter that wraps once or three times during a task still gives the exact energy."""
    range_uj = 1_000_000_000
    rapl_tree.zone("intel-rapl:0", "package-0", range_uj - 1_000, range_uj)
    clock = _Clock()
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600, clock=clock)
    assert meter.available()
    steps = [range_uj // 2 + 17 * i for i in range(n_steps)]
    energy_j, wraps = _wrap_task(rapl_tree, meter, clock, steps, poller.poll_now)
    assert wraps == {2: 1, 6: 3}[n_steps]
    assert energy_j == pytest.approx(sum(steps) / 1e6)


def test_poller_thread_tracks_wraps_between_task_boundaries(
    rapl_tree: RaplTree, poller: Poller
) -> None:
    """With the real daemon thread (no explicit polls), three wraps in one task are all counted."""
    range_uj = 1_000_000_000
    rapl_tree.zone("intel-rapl:0", "package-0", 0, range_uj)
    clock = _Clock()
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=0.005, clock=clock)
    assert meter.available()
    assert not poller.running  # lazily started by the first task
    steps = [range_uj * 3 // 5] * 5  # 3 wraps over 5 steps of 0.6 range

    def let_the_thread_poll() -> None:
        assert poller.wait_ticks(2, timeout_s=5)

    energy_j, wraps = _wrap_task(rapl_tree, meter, clock, steps, let_the_thread_poll)
    assert poller.running
    assert wraps == 3
    assert energy_j == pytest.approx(sum(steps) / 1e6)


def test_psys_is_never_added_to_packages(rapl_tree: RaplTree, poller: Poller) -> None:
    """With packages present, psys (which already includes them) is ignored."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    rapl_tree.zone("intel-rapl:1", "psys")
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    snap = meter.start()
    rapl_tree.advance("intel-rapl:0", 2_000_000)
    rapl_tree.advance("intel-rapl:1", 9_000_000)
    reading = meter.read(snap, 1.0, final=True)
    assert reading["cpu_power"] == pytest.approx(2.0)
    assert reading["cpu_energy_scope"] == "package"


def test_psys_alone_is_used_with_platform_scope(rapl_tree: RaplTree, poller: Poller) -> None:
    """Without package zones, psys gives cpu_power and says its scope is the platform."""
    rapl_tree.zone("intel-rapl:1", "psys")
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    snap = meter.start()
    rapl_tree.advance("intel-rapl:1", 9_000_000)
    reading = meter.read(snap, 1.0, final=True)
    assert reading["cpu_power"] == pytest.approx(9.0)
    assert reading["cpu_energy_scope"] == "platform"


@pytest.mark.usefixtures("install_energy")
def test_permission_denied_gives_none_and_exactly_one_warning_with_the_fix(
    rapl_tree: RaplTree,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Root-only energy_uj: cpu_power None, one warning naming the fix, even if meters rebuild."""
    _two_packages_with_dram(rapl_tree)
    real_read = rapl._read_uj

    def denied(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(rapl, "_read_uj", denied)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            reset_settings(Settings.model_validate({"energy": {"rapl_root": rapl_tree.root}}))
            reset_meters()  # settings reloaded: the meters are built again
            with Task("work") as task:
                pass
            assert task.cpu_power is None
            assert task.dram_energy_j is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "permission denied" in warnings[0]
    assert "chmod" in warnings[0]
    assert "udev" in warnings[0]
    assert not get_poller().registered(str(rapl_tree.paths["intel-rapl:0"] / "energy_uj"))


def test_counter_unreadable_after_start_gives_none_once(
    rapl_tree: RaplTree, poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter that disappears mid-task gives cpu_power None and one warning, not an error."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    snap = meter.start()
    (rapl_tree.paths["intel-rapl:0"] / "energy_uj").unlink()
    with caplog.at_level(logging.WARNING):
        first = meter.read(snap, 1.0, final=False)
        second = meter.read(snap, 1.0, final=True)
    assert first["cpu_power"] is None
    assert second["cpu_power"] is None
    assert second["cpu_energy_source"] is None
    assert len(caplog.records) == 1


def test_no_powercap_tree_means_unavailable_without_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine without RAPL is not an error: unavailable, nothing above debug logged."""
    with caplog.at_level(logging.INFO):
        assert not RaplMeter(tmp_path / "missing").available()
    assert caplog.records == []


def test_task_shorter_than_the_counter_update_is_flagged(
    rapl_tree: RaplTree, poller: Poller
) -> None:
    """cpu_energy_short_task is set when the task is shorter than RAPL's update period."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    meter = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    snap = meter.start()
    short = meter.read(snap, rapl.RAPL_UPDATE_PERIOD_S / 2, final=True)
    long = meter.read(snap, rapl.RAPL_UPDATE_PERIOD_S * 2, final=True)
    assert short["cpu_energy_short_task"] is True
    assert long["cpu_energy_short_task"] is False


def test_meters_on_one_zone_share_its_wrap_tracking(rapl_tree: RaplTree, poller: Poller) -> None:
    """A meter built after another (settings reloaded) still sees the wraps the poller counts."""
    range_uj = 1_000_000_000
    rapl_tree.zone("intel-rapl:0", "package-0", 0, range_uj)
    clock = _Clock()
    first = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600, clock=clock)
    first.start()
    second = RaplMeter(rapl_tree.root, poller=poller, poll_interval_s=3600)
    assert second.available()
    steps = [range_uj * 3 // 5] * 5
    energy_j, wraps = _wrap_task(rapl_tree, second, clock, steps, poller.poll_now)
    assert wraps == 3
    assert energy_j == pytest.approx(sum(steps) / 1e6)
