"""NVML energy against a fake ``pynvml``: counter, sampled power, device visibility, absence."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from tasktrace.meters.nvml import NVML_COUNTER_PERIOD_S, NvmlMeter
from tasktrace.meters.poller import Poller

from .energy_helpers import DRIVER_NOT_LOADED, FakeGpu, make_fake_pynvml


def _energy_task(meter: NvmlMeter, gpus: list[FakeGpu], added_mj: list[int]) -> dict:
    snap = meter.start()
    for gpu, mj in zip(gpus, added_mj, strict=True):
        assert gpu.energy_mj is not None
        gpu.energy_mj += mj
    return dict(meter.read(snap, 1.0, final=True))


def test_energy_counter_summed_over_all_gpus(fake_gpus: list[FakeGpu], poller: Poller) -> None:
    """With the counter supported, gpu_power is the sum of counter deltas (mJ → J)."""
    meter = NvmlMeter(poller=poller, environ={})
    assert meter.available()
    added_mj = [1_500, 2_500, 250]
    reading = _energy_task(meter, fake_gpus, added_mj)
    assert reading["gpu_power"] == pytest.approx(sum(added_mj) / 1e3)
    assert reading["gpu_energy_source"] == "nvml-counter"
    assert reading["gpu_energy_scope"] == "device"
    assert poller.registered(f"nvml-energy:{fake_gpus[0].uuid}")  # polled: resets are seen


def test_counter_unsupported_integrates_sampled_power(
    fake_gpus: list[FakeGpu], poller: Poller
) -> None:
    """Without the counter, power sampled by the poller is integrated and the source says so."""
    for gpu in fake_gpus:
        gpu.energy_mj = None
    now = [100.0]
    meter = NvmlMeter(poller=poller, sample_interval_s=3600, environ={}, clock=lambda: now[0])
    assert meter.available()
    snap = meter.start()
    assert poller.running
    now[0] += 2.0
    poller.poll_now()
    for gpu in fake_gpus:
        gpu.power_mw *= 3
    now[0] += 1.0
    reading = meter.read(snap, 3.0, final=True)
    base_w = sum(g.power_mw for g in fake_gpus) / 3 / 1e3
    expected_j = base_w * 2.0 + (base_w + 3 * base_w) / 2 * 1.0
    assert reading["gpu_power"] == pytest.approx(expected_j)
    assert reading["gpu_energy_source"] == "nvml-sampled"
    assert all("nvmlDeviceGetPowerUsage" in g.reads for g in fake_gpus)


def test_visible_devices_by_index_follow_pci_order(
    fake_gpus: list[FakeGpu], poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    """CUDA_VISIBLE_DEVICES=1 is the second GPU in PCI bus order, not NVML's second device."""
    meter = NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": "1"})
    with caplog.at_level(logging.WARNING):
        reading = _energy_task(meter, fake_gpus, [1_000, 20_000, 300_000])
    # PCI order: fake_gpus[1] (01:00), fake_gpus[2] (41:00), fake_gpus[0] (C1:00)
    assert reading["gpu_power"] == pytest.approx(300.0)
    assert caplog.records == []


def test_index_mapping_warns_once_without_pci_bus_id_order(
    fake_gpus: list[FakeGpu], poller: Poller, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Indices under CUDA's default FASTEST_FIRST order are mapped in PCI order, with a warning."""
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": "0,2"}).available()
    assert len(caplog.records) == 1
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in caplog.records[0].getMessage()


def test_visible_devices_by_uuid_and_prefix(fake_gpus: list[FakeGpu], poller: Poller) -> None:
    """UUIDs (full, or a unique prefix as CUDA accepts) select exactly those GPUs."""
    visible = f"{fake_gpus[0].uuid},GPU-bbbb"
    meter = NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": visible})
    reading = _energy_task(meter, fake_gpus, [1_000, 20_000, 300_000])
    assert reading["gpu_power"] == pytest.approx(1.0 + 300.0)


def test_invalid_entry_hides_it_and_every_later_one(
    fake_gpus: list[FakeGpu], poller: Poller
) -> None:
    """As in CUDA, parsing stops at the first entry that names no GPU."""
    meter = NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": "0,7,1"})
    reading = _energy_task(meter, fake_gpus, [1_000, 20_000, 300_000])
    assert reading["gpu_power"] == pytest.approx(20.0)


@pytest.mark.parametrize("visible", ["", "-1"])
def test_no_visible_gpu_is_unavailable(
    fake_gpus: list[FakeGpu], poller: Poller, visible: str
) -> None:
    """An empty or invalid CUDA_VISIBLE_DEVICES hides every GPU: nothing to measure."""
    meter = NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": visible})
    assert not meter.available()
    assert meter.read(meter.start(), 1.0, final=True) == {}
    assert "no GPU" in (meter.reason or "")


def test_nvml_not_installed_gives_unavailable_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without nvidia-ml-py the meter is unavailable, naming the extra, without a warning."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    meter = NvmlMeter(environ={})
    with caplog.at_level(logging.WARNING):
        assert not meter.available()
    assert "tasktrace[nvml]" in (meter.reason or "")
    assert meter.start() is None
    assert caplog.records == []


def test_nvml_init_failure_gives_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NVIDIA driver (nvmlInit fails): unavailable, gpu_power stays None."""
    fake = make_fake_pynvml([], init_error=DRIVER_NOT_LOADED)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = NvmlMeter(environ={})
    assert not meter.available()
    assert "did not initialise" in (meter.reason or "")


def test_nvml_failing_mid_task_gives_none_and_one_warning(
    fake_gpus: list[FakeGpu], poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU that errors after start (fallen off the bus) gives None, not an exception."""
    meter = NvmlMeter(poller=poller, environ={})
    snap = meter.start()
    fake_gpus[0].energy_mj = None  # now raises NOT_SUPPORTED from the counter
    with caplog.at_level(logging.WARNING):
        first = meter.read(snap, 1.0, final=False)
        second = meter.read(snap, 1.0, final=True)
    assert first["gpu_power"] is None
    assert second["gpu_energy_source"] is None
    assert len(caplog.records) == 1


def test_task_shorter_than_counter_period_is_flagged(
    fake_gpus: list[FakeGpu], poller: Poller
) -> None:
    """gpu_energy_short_task marks tasks shorter than the counter's update period."""
    meter = NvmlMeter(poller=poller, environ={})
    snap = meter.start()
    assert meter.read(snap, NVML_COUNTER_PERIOD_S / 2, final=True)["gpu_energy_short_task"]
    assert not meter.read(snap, NVML_COUNTER_PERIOD_S * 2, final=True)["gpu_energy_short_task"]


def test_torch_cuda_order_wins_once_torch_initialised_cuda(
    fake_gpus: list[FakeGpu], poller: Poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the program's torch already initialised CUDA, torch's device UUIDs pick the GPUs."""
    chosen = fake_gpus[0]
    props = types.SimpleNamespace(uuid=chosen.uuid.removeprefix("GPU-"))
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: 1,
        get_device_properties=lambda index: props,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    meter = NvmlMeter(poller=poller, environ={"CUDA_VISIBLE_DEVICES": "0"})
    reading = _energy_task(meter, fake_gpus, [1_000, 20_000, 300_000])
    assert reading["gpu_power"] == pytest.approx(1.0)
