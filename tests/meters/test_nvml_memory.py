"""GPU memory without PyTorch, per-device detail and MIG, from a fake ``pynvml`` (issue 17).

Every test goes through ``Task`` with the NVML meter installed from settings, as a program
would; the poller's automatic rounds are slowed down to an hour, and the test takes each sample
itself (``poll_now``) after changing what the fake NVML reports.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task
from tasktrace.core import attributes as attr
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.meters import gpu
from tasktrace.meters.nvml import MIG_SCOPE
from tasktrace.meters.poller import get_poller

from .energy_helpers import FakeGpu, FakeProcess, mig_instance

GIB = 1 << 30
ME = os.getpid()


def _install(monkeypatch: pytest.MonkeyPatch, visible: str | None = None) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    reset_settings(
        Settings.model_validate(
            {
                "meters": ["nvml"],
                "energy": {"sample_interval_s": 3600, "counter_poll_interval_s": 3600},
            }
        )
    )


def _sample() -> None:
    get_poller().poll_now()


@pytest.fixture
def child_process() -> Iterator[subprocess.Popen[bytes]]:
    """Start a real child process of the test (standing in for a CUDA subprocess)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch, fake_gpus: list[FakeGpu]) -> types.SimpleNamespace:
    """Install a program's torch with CUDA initialised on the first PCI GPU, and a GPU driver."""
    peak = types.SimpleNamespace(bytes=0)
    props = types.SimpleNamespace(uuid=fake_gpus[1].uuid.removeprefix("GPU-"))
    cuda = types.SimpleNamespace(
        initialized=True,
        is_initialized=lambda: cuda.initialized,
        device_count=lambda: 1,
        get_device_properties=lambda index: props,
        max_memory_allocated=lambda: peak.bytes,
        reset_peak_memory_stats=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(gpu, "_DRIVER_NODES", (str(Path(__file__)),))  # "a driver node exists"
    return types.SimpleNamespace(cuda=cuda, peak=peak)


@pytest.mark.usefixtures("install_energy")
def test_process_memory_without_torch_is_the_peak_of_the_samples(
    fake_gpus: list[FakeGpu],
    monkeypatch: pytest.MonkeyPatch,
    task_spans: InMemorySpanExporter,
) -> None:
    """Without torch: the largest sample of this process's memory, other processes left out."""
    device = fake_gpus[1]
    _install(monkeypatch, visible=device.uuid)
    device.processes = [FakeProcess(1, 10 * GIB)]  # init's: not ours
    with Task("train") as task:
        mine = FakeProcess(ME, 1 * GIB)
        device.processes.append(mine)
        _sample()
        mine.used_bytes = 3 * GIB
        _sample()
        mine.used_bytes = 2 * GIB
        _sample()
    assert task.peak_gpu_memory == 3 * GIB
    assert task.peak_gpu_memory_source == "nvml-sampled"
    assert "gpu_devices" not in (task.model_extra or {})  # one visible device: totals only
    (span,) = task_spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[attr.PEAK_GPU_MEMORY_BYTES] == 3 * GIB
    assert span.attributes[attr.PEAK_GPU_MEMORY_SOURCE] == "nvml-sampled"


@pytest.mark.usefixtures("install_energy")
def test_nested_tasks_keep_their_own_peaks_and_the_parent_the_largest(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RSS rule: a child's peak is its own; a parent's is at least each child's."""
    device = fake_gpus[1]
    _install(monkeypatch, visible=device.uuid)
    mine = FakeProcess(ME, 1 * GIB)
    device.processes = [mine]
    with Task("epoch") as parent:
        with Task("big-batch") as big:
            mine.used_bytes = 6 * GIB
            _sample()
        mine.used_bytes = 1 * GIB  # freed
        _sample()
        with Task("small-batch") as small:
            mine.used_bytes = 2 * GIB
            _sample()
    assert big.peak_gpu_memory == 6 * GIB
    assert small.peak_gpu_memory == 2 * GIB
    assert parent.peak_gpu_memory == 6 * GIB


@pytest.mark.usefixtures("install_energy")
def test_memory_of_a_child_process_counts_and_others_do_not(
    fake_gpus: list[FakeGpu],
    monkeypatch: pytest.MonkeyPatch,
    child_process: subprocess.Popen[bytes],
) -> None:
    """A CUDA subprocess the task runs is ours (a descendant); the parent process is not."""
    device = fake_gpus[1]
    _install(monkeypatch, visible=device.uuid)
    with Task("run-child") as task:
        device.processes = [
            FakeProcess(ME, 1 * GIB),
            FakeProcess(child_process.pid, 2 * GIB),
            FakeProcess(os.getppid(), 8 * GIB),  # an ancestor, not a descendant
        ]
        _sample()
    assert task.peak_gpu_memory == 3 * GIB


@pytest.mark.usefixtures("install_energy")
def test_no_process_of_ours_on_the_gpu_is_none_not_zero(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that never had a CUDA context (or another PID namespace's numbers) gets None."""
    _install(monkeypatch, visible=fake_gpus[1].uuid)
    fake_gpus[1].processes = [FakeProcess(1, 4 * GIB)]
    with Task("cpu-only") as task:
        _sample()
    assert task.peak_gpu_memory is None
    assert task.peak_gpu_memory_source is None
    assert task.gpu_power is not None  # energy is still measured


@pytest.mark.usefixtures("install_energy")
def test_with_torch_in_use_torch_high_water_mark_stays_the_source(
    fake_gpus: list[FakeGpu],
    monkeypatch: pytest.MonkeyPatch,
    fake_torch: types.SimpleNamespace,
) -> None:
    """With CUDA in use through torch, its exact max_memory_allocated wins over NVML's figure."""
    _install(monkeypatch)
    fake_gpus[1].processes = [FakeProcess(ME, 7 * GIB)]
    with Task("torch-step") as task:
        fake_torch.peak.bytes = 5 * GIB
        _sample()
    assert task.peak_gpu_memory == 5 * GIB
    assert task.peak_gpu_memory_source == "torch"


@pytest.mark.usefixtures("install_energy")
def test_torch_imported_without_cuda_leaves_memory_to_nvml(
    fake_gpus: list[FakeGpu],
    monkeypatch: pytest.MonkeyPatch,
    fake_torch: types.SimpleNamespace,
) -> None:
    """With torch imported but CUDA not initialised (CuPy or JAX in use), NVML is the source."""
    fake_torch.cuda.initialized = False
    _install(monkeypatch, visible=fake_gpus[1].uuid)
    fake_gpus[1].processes = [FakeProcess(ME, 3 * GIB)]
    with Task("cupy-step") as task:
        _sample()
    assert task.peak_gpu_memory == 3 * GIB
    assert task.peak_gpu_memory_source == "nvml-sampled"


@pytest.mark.usefixtures("install_energy")
def test_several_gpus_give_per_device_detail_and_totals(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Three visible GPUs: gpu_devices in CUDA (PCI) order; the seed's fields hold the totals."""
    _install(monkeypatch)
    pci_order = [fake_gpus[1], fake_gpus[2], fake_gpus[0]]
    for number, device in enumerate(pci_order):
        device.name = f"NVIDIA H200 #{number}"
    path = tmp_path / "run.json"
    with Task("ddp", file=path) as task:
        for number, device in enumerate(pci_order):
            assert device.energy_mj is not None
            device.energy_mj += 1_000 * (number + 1)
            device.processes = [FakeProcess(ME, (number + 1) * GIB)]
        _sample()
    devices = (task.model_extra or {})["gpu_devices"]
    assert [d["index"] for d in devices] == [0, 1, 2]
    assert [d["uuid"] for d in devices] == [g.uuid for g in pci_order]
    assert [d["name"] for d in devices] == [g.name for g in pci_order]
    assert [d["energy_j"] for d in devices] == pytest.approx([1.0, 2.0, 3.0])
    assert [d["peak_memory_bytes"] for d in devices] == [GIB, 2 * GIB, 3 * GIB]
    assert task.gpu_power == pytest.approx(6.0)
    assert task.peak_gpu_memory == 6 * GIB
    assert json.loads(path.read_text())["gpu_devices"] == devices


@pytest.mark.parametrize("how", ["uuid", "index"])
@pytest.mark.usefixtures("install_energy")
def test_cuda_visible_devices_naming_one_gpu_reports_only_it(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """CUDA_VISIBLE_DEVICES naming one GPU (UUID or index): only its energy and memory count."""
    chosen = fake_gpus[2]  # second in PCI order
    _install(monkeypatch, visible=chosen.uuid if how == "uuid" else "1")
    with Task("one-gpu") as task:
        for number, device in enumerate(fake_gpus):
            assert device.energy_mj is not None
            device.energy_mj += 1_000 * (number + 1)
            device.processes = [FakeProcess(ME, (number + 1) * GIB)]
        _sample()
    assert task.gpu_power == pytest.approx(3.0)
    assert task.peak_gpu_memory == 3 * GIB
    assert "gpu_devices" not in (task.model_extra or {})


@pytest.mark.usefixtures("install_energy")
def test_listing_processes_not_supported_gives_none_and_one_warning(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """NVMLError_NotSupported from the process list: memory None (warned once), energy still."""
    _install(monkeypatch, visible=f"{fake_gpus[1].uuid},{fake_gpus[2].uuid}")
    fake_gpus[2].unsupported.add("nvmlDeviceGetComputeRunningProcesses")
    fake_gpus[1].processes = [FakeProcess(ME, GIB)]
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with Task("step") as task:
                _sample()
    assert task.peak_gpu_memory is None
    devices = (task.model_extra or {})["gpu_devices"]
    assert [d["peak_memory_bytes"] for d in devices] == [GIB, None]
    assert task.gpu_power is not None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot list the processes" in m for m in messages) == 1, messages


@pytest.mark.usefixtures("install_energy")
def test_used_memory_not_available_gives_none_and_one_warning(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No usedGpuMemory (NVML_VALUE_NOT_AVAILABLE) for our process: None, never 0."""
    _install(monkeypatch, visible=fake_gpus[1].uuid)
    fake_gpus[1].processes = [FakeProcess(ME, None)]
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with Task("step") as task:
                _sample()
    assert task.peak_gpu_memory is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("does not give the memory" in m for m in messages) == 1, messages


@pytest.mark.usefixtures("install_energy")
def test_energy_unsupported_on_a_gpu_leaves_memory_measured(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU with neither energy counter nor power (NotSupported each): gpu_power None, memory."""
    device = fake_gpus[1]
    device.unsupported |= {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"}
    _install(monkeypatch, visible=device.uuid)
    device.processes = [FakeProcess(ME, 2 * GIB)]
    with Task("step") as task:
        _sample()
    assert task.gpu_power is None
    assert task.peak_gpu_memory == 2 * GIB


# ----- MIG ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("install_energy")
def test_mig_instance_reports_whole_gpu_energy_and_its_own_memory(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA_VISIBLE_DEVICES=MIG-...: the parent GPU's energy (shared scope), the slice's memory."""
    parent = fake_gpus[1]
    empty_slot = None
    first = mig_instance(parent, "MIG-11111111-aaaa-bbbb-cccc-000000000001")
    parent.instances.append(empty_slot)
    second = mig_instance(parent, "MIG-22222222-aaaa-bbbb-cccc-000000000002")
    _install(monkeypatch, visible=second.uuid)
    with Task("slice") as task:
        assert parent.energy_mj is not None
        parent.energy_mj += 4_000
        first.processes = [FakeProcess(1, 9 * GIB)]
        second.processes = [FakeProcess(ME, 5 * GIB)]
        _sample()
    assert task.gpu_power == pytest.approx(4.0)
    assert task.gpu_energy_scope == MIG_SCOPE
    assert task.peak_gpu_memory == 5 * GIB
    assert "nvmlDeviceGetComputeRunningProcesses" not in first.reads  # only our slice's list


@pytest.mark.usefixtures("install_energy")
def test_two_slices_of_one_gpu_count_its_energy_once(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two MIG instances of one GPU visible: energy counted once, memory per instance."""
    parent = fake_gpus[1]
    first = mig_instance(parent, "MIG-11111111-aaaa-bbbb-cccc-000000000001")
    second = mig_instance(parent, "MIG-22222222-aaaa-bbbb-cccc-000000000002")
    _install(monkeypatch, visible=f"{first.uuid},{second.uuid}")
    with Task("two-slices") as task:
        assert parent.energy_mj is not None
        parent.energy_mj += 2_000
        first.processes = [FakeProcess(ME, GIB)]
        second.processes = [FakeProcess(ME, 2 * GIB)]
        _sample()
    assert task.gpu_power == pytest.approx(2.0)
    devices = (task.model_extra or {})["gpu_devices"]
    assert [d["uuid"] for d in devices] == [first.uuid, second.uuid]
    assert [d["energy_j"] for d in devices] == pytest.approx([2.0, 2.0])  # the shared GPU's
    assert [d["peak_memory_bytes"] for d in devices] == [GIB, 2 * GIB]
    assert task.peak_gpu_memory == 3 * GIB


@pytest.mark.usefixtures("install_energy")
def test_gpu_in_mig_mode_named_whole_lists_every_instance(
    fake_gpus: list[FakeGpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MIG-mode GPU named by its UUID: whole-GPU energy, our memory over all its instances."""
    parent = fake_gpus[1]
    first = mig_instance(parent, "MIG-11111111-aaaa-bbbb-cccc-000000000001")
    second = mig_instance(parent, "MIG-22222222-aaaa-bbbb-cccc-000000000002")
    _install(monkeypatch, visible=parent.uuid)
    with Task("whole") as task:
        first.processes = [FakeProcess(ME, GIB)]
        second.processes = [FakeProcess(ME, 2 * GIB), FakeProcess(1, 5 * GIB)]
        _sample()
    assert task.gpu_energy_scope == MIG_SCOPE
    assert task.gpu_power is not None
    assert task.peak_gpu_memory == 3 * GIB
