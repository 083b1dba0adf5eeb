"""Fixtures for the energy meters: fixture sysfs trees, a fake ``pynvml``, private pollers."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace.core.warn import reset_warnings
from tasktrace.meters import (
    reset_meters,
)
from tasktrace.meters.poller import Poller, get_poller

from .energy_helpers import (
    FakeGpu,
    JoulesExporter,
    PrometheusServer,
    RaplTree,
    make_fake_pynvml,
)


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Forget which warnings tasktrace (the meter modules among others) has already given."""
    reset_warnings()
    yield
    reset_warnings()


@pytest.fixture
def poller() -> Iterator[Poller]:
    """Give the test a private poller, closed (thread stopped) afterwards."""
    p = Poller()
    yield p
    p.close()


@pytest.fixture
def install_energy() -> Iterator[None]:
    """Rebuild the process's meters from the settings the test installs; restore afterwards."""
    reset_meters()
    yield
    reset_meters()
    get_poller().close()  # the fixture trees' counters go away with tmp_path


@pytest.fixture
def rapl_tree(tmp_path: Path) -> RaplTree:
    """Give the test an empty fake powercap tree."""
    return RaplTree(tmp_path / "powercap")


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> list[FakeGpu]:
    """Three fake GPUs installed as ``pynvml``, NVML order differing from PCI bus order.

    PCI order (CUDA's order under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) is: gpus[1], gpus[2], gpus[0].
    """
    gpus = [
        FakeGpu("GPU-cccc3333-0000-0000-0000-000000000000", "00000000:C1:00.0"),
        FakeGpu("GPU-aaaa1111-0000-0000-0000-000000000000", "00000000:01:00.0"),
        FakeGpu("GPU-bbbb2222-0000-0000-0000-000000000000", "00000000:41:00.0"),
    ]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(gpus))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return gpus


PROMETHEUS_JOB = "testbox"
PROMETHEUS_SCRAPE_S = 0.25
EXPORTER_RATE_W = 40.0


@pytest.fixture(scope="session")
def prometheus_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrometheusServer, JoulesExporter]]:
    """Start a real Prometheus scraping a joules counter rising at ``EXPORTER_RATE_W``."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not found; install it with .ci/install-prometheus.sh")
    exporter = JoulesExporter(EXPORTER_RATE_W)
    server = PrometheusServer(
        binary,
        tmp_path_factory.mktemp("prometheus"),
        exporter.target,
        PROMETHEUS_JOB,
        PROMETHEUS_SCRAPE_S,
    )
    try:
        server.wait_for_samples(exporter.metric, 4, timeout_s=30)
        yield server, exporter
    finally:
        server.close()
        exporter.close()
