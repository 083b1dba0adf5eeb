"""Helpers for the energy-meter tests: a fake powercap tree and a fake ``pynvml`` module."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pynvml as real_pynvml  # the real bindings: their error classes, constants and structs


class RaplTree:
    """A fake ``/sys/class/powercap`` tree in a temporary folder."""

    def __init__(self, root: Path) -> None:
        """Create an empty tree at ``root``."""
        self.root = root
        self.paths: dict[str, Path] = {}
        self.ranges: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def zone(
        self,
        zone_id: str,
        name: str,
        energy_uj: int = 0,
        range_uj: int = 262_143_328_850,
        *,
        nested: bool = False,
    ) -> Path:
        """Add a zone; ``nested`` puts it only inside its parent's folder (no flat link)."""
        parent_id = ":".join(zone_id.split(":")[:-1])
        base = self.paths[parent_id] if nested else self.root
        path = base / zone_id
        path.mkdir()
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
        self.paths[zone_id] = path
        self.ranges[zone_id] = range_uj
        self.set(zone_id, energy_uj)
        return path

    def get(self, zone_id: str) -> int:
        """Return the raw counter of a zone."""
        return int((self.paths[zone_id] / "energy_uj").read_text())

    def set(self, zone_id: str, energy_uj: int) -> None:
        """Write a zone's raw counter atomically (a poller thread may be reading it)."""
        target = self.paths[zone_id] / "energy_uj"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(f"{energy_uj}\n")
        os.replace(tmp, target)

    def advance(self, zone_id: str, delta_uj: int) -> int:
        """Add ``delta_uj`` to a zone's counter, wrapping at its range; return the wraps (0/1)."""
        raw = self.get(zone_id) + delta_uj
        wrapped = raw >= self.ranges[zone_id]
        self.set(zone_id, raw % self.ranges[zone_id])
        return int(wrapped)


@dataclass
class FakeProcess:
    """One compute process on a fake device, as ``nvmlDeviceGetComputeRunningProcesses`` lists."""

    pid: int
    used_bytes: int | None
    """``usedGpuMemory``; ``None`` where NVML cannot give it (``NVML_VALUE_NOT_AVAILABLE``)."""


@dataclass(eq=False)
class FakeGpu:
    """One GPU (or MIG instance) as the fake NVML sees it; the object is its handle."""

    uuid: str
    bus_id: str = ""
    energy_mj: int | None = 1_000_000
    """Total-energy counter in mJ; ``None``: not supported (pre-Volta, or a MIG instance)."""
    power_mw: int | None = 100_000
    """Power in mW; ``None``: not supported."""
    name: str = "NVIDIA H200"
    mig: bool = False
    """MIG mode enabled (``nvmlDeviceGetMigMode`` current value)."""
    instances: list[FakeGpu | None] = field(default_factory=list)
    """MIG slots of a GPU in MIG mode (``None``: an empty slot, NVML_ERROR_NOT_FOUND)."""
    processes: list[FakeProcess] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)
    """NVML function names that raise ``NVMLError_NotSupported`` for this device."""
    parent: FakeGpu | None = None
    reads: list[str] = field(default_factory=list)


def mig_instance(parent: FakeGpu, uuid: str, name: str = "NVIDIA H200 MIG 1g.18gb") -> FakeGpu:
    """Add a MIG instance to ``parent`` (put in MIG mode) and return its handle."""
    instance = FakeGpu(uuid, name=name, energy_mj=None, power_mw=None, parent=parent)
    instance.unsupported |= {"nvmlDeviceGetMigMode"}
    parent.mig = True
    parent.instances.append(instance)
    return instance


NOT_SUPPORTED = real_pynvml.NVML_ERROR_NOT_SUPPORTED
DRIVER_NOT_LOADED = real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED
MAX_MIG_DEVICES = 7


def make_fake_pynvml(  # noqa: PLR0915 - one function per NVML call it stands in for
    gpus: list[FakeGpu], *, init_error: int | None = None
) -> types.ModuleType:
    """Build a module with the part of ``pynvml``'s API the NVML meter uses.

    It follows nvidia-ml-py's documented return types: NVML's own error classes
    (``NVMLError(value)`` makes ``NVMLError_NotSupported`` and so on), ints for energy (mJ) and
    power (mW), ``[current, pending]`` for the MIG mode, a ``c_uint`` from
    ``nvmlDeviceIsMigDeviceHandle``, ``c_nvmlMemory_t`` from ``nvmlDeviceGetMemoryInfo`` and
    ``nvmlFriendlyObject`` process entries (``usedGpuMemory`` ``None`` when not available). Any
    call named in a device's ``unsupported`` raises ``NVMLError_NotSupported``. Devices are
    enumerated in the order given (NVML's order), which tests make differ from PCI bus order.
    """
    fake = types.ModuleType("pynvml")

    def check(handle: FakeGpu, call: str) -> None:
        handle.reads.append(call)
        if call in handle.unsupported:
            raise real_pynvml.NVMLError(NOT_SUPPORTED)

    def nvml_init() -> None:
        if init_error is not None:
            raise real_pynvml.NVMLError(init_error)

    def energy(handle: FakeGpu) -> int:
        check(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if handle.energy_mj is None:
            raise real_pynvml.NVMLError(NOT_SUPPORTED)
        return int(handle.energy_mj)

    def power(handle: FakeGpu) -> int:
        check(handle, "nvmlDeviceGetPowerUsage")
        if handle.power_mw is None:
            raise real_pynvml.NVMLError(NOT_SUPPORTED)
        return int(handle.power_mw)

    def mig_mode(handle: FakeGpu) -> list[int]:
        check(handle, "nvmlDeviceGetMigMode")
        return [int(handle.mig), int(handle.mig)]

    def is_mig_handle(handle: FakeGpu) -> ctypes.c_uint:
        check(handle, "nvmlDeviceIsMigDeviceHandle")
        return ctypes.c_uint(int(handle.parent is not None))

    def max_mig(handle: FakeGpu) -> int:
        check(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return MAX_MIG_DEVICES

    def mig_by_index(handle: FakeGpu, index: int) -> FakeGpu:
        check(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not handle.mig:
            raise real_pynvml.NVMLError(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        instance = handle.instances[index] if index < len(handle.instances) else None
        if instance is None:
            raise real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_FOUND)
        return instance

    def parent_of(handle: FakeGpu) -> FakeGpu:
        check(handle, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        if handle.parent is None:
            raise real_pynvml.NVMLError(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.parent

    def memory_info(handle: FakeGpu) -> real_pynvml.c_nvmlMemory_t:
        check(handle, "nvmlDeviceGetMemoryInfo")
        used = sum(p.used_bytes or 0 for p in handle.processes)
        total = 18 << 30 if handle.parent is not None else 141 << 30
        return real_pynvml.c_nvmlMemory_t(total, total - used, used)

    def processes(handle: FakeGpu) -> list[real_pynvml.nvmlFriendlyObject]:
        check(handle, "nvmlDeviceGetComputeRunningProcesses")
        if handle.mig and handle.parent is None:  # listed per MIG instance, not on the GPU
            return []
        return [
            real_pynvml.nvmlFriendlyObject(
                {
                    "pid": p.pid,
                    "usedGpuMemory": p.used_bytes,
                    "gpuInstanceId": 0xFFFFFFFF,
                    "computeInstanceId": 0xFFFFFFFF,
                }
            )
            for p in handle.processes
        ]

    def pci_info(handle: FakeGpu) -> real_pynvml.nvmlPciInfo_t:
        check(handle, "nvmlDeviceGetPciInfo")
        info = real_pynvml.nvmlPciInfo_t()
        info.busId = handle.bus_id.encode()
        return info

    for name in dir(real_pynvml):  # the error classes and the constants, as NVML defines them
        if name.startswith(("NVMLError", "NVML_")):
            setattr(fake, name, getattr(real_pynvml, name))
    fake.nvmlInit = nvml_init  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: h.uuid  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: h.name  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPciInfo = pci_info  # type: ignore[attr-defined]
    fake.nvmlDeviceGetTotalEnergyConsumption = energy  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPowerUsage = power  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMigMode = mig_mode  # type: ignore[attr-defined]
    fake.nvmlDeviceIsMigDeviceHandle = is_mig_handle  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMaxMigDeviceCount = max_mig  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMigDeviceHandleByIndex = mig_by_index  # type: ignore[attr-defined]
    fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = parent_of  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = memory_info  # type: ignore[attr-defined]
    fake.nvmlDeviceGetComputeRunningProcesses = processes  # type: ignore[attr-defined]
    return fake


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout tests)
            pass


class JoulesExporter:
    """An HTTP exporter serving a joules counter rising at ``rate_w`` (J/s) since it started."""

    metric = "tasktrace_test_energy_joules_total"

    def __init__(self, rate_w: float) -> None:
        """Start serving ``/metrics`` on a loopback port."""
        self.rate_w = rate_w
        self.t0 = time.monotonic()
        exporter = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                value = exporter.rate_w * (time.monotonic() - exporter.t0)
                body = (
                    f"# TYPE {exporter.metric} counter\n{exporter.metric} {value:.6f}\n"
                ).encode()
                self._send(200, body, "text/plain; version=0.0.4")

        self.server, self.url = _serve(Handler)

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape config."""
        return self.url.removeprefix("http://")

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class FakePrometheus:
    """A stand-in server that answers every request slowly or with an error, counting requests."""

    def __init__(self, *, delay_s: float = 0.0, status: int = 200, body: bytes = b"{}") -> None:
        """Start serving on a loopback port; each answer waits up to ``delay_s``."""
        self.requests = 0
        self.release = threading.Event()
        fake = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:
                fake.requests += 1
                fake.release.wait(delay_s)
                self._send(status, body, "application/json")

        self.server, self.url = _serve(Handler)

    def close(self) -> None:
        """Release waiting answers and stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def query_api(url: str, promql: str) -> list:
    """Run an instant query against the Prometheus at ``url``; return the result list.

    Raises:
        OSError: Not listening yet (``URLError``), or answering with an HTTP error: Prometheus
            answers 503 while it starts. That answer is closed here, so an error the caller
            keeps (``wait_for_samples`` keeps the last one, in a reference cycle with its frame)
            holds no open socket for the garbage collector to warn about.
    """
    endpoint = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(endpoint, timeout=5) as response:  # noqa: S310 - loopback
            return json.load(response)["data"]["result"]
    except urllib.error.HTTPError as e:
        with e:  # the error is the open answer: close its connection now
            raise OSError(f"prometheus answered HTTP {e.code} {e.reason}") from None


class PrometheusServer:
    """A real Prometheus (Debian's ``prometheus`` binary) on a loopback port, for one session."""

    def __init__(self, binary: str, workdir: Path, target: str, job: str, scrape_s: float):
        """Write a config scraping ``target`` as ``job`` every ``scrape_s`` seconds and start."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape_s = scrape_s
        config = workdir / "prometheus.yml"
        ms = round(scrape_s * 1000)
        config.write_text(
            "global:\n"
            f"  scrape_interval: {ms}ms\n"
            f"  scrape_timeout: {ms}ms\n"
            "scrape_configs:\n"
            f"  - job_name: {job}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    def query(self, promql: str) -> list:
        """Run an instant query; return the result list (see :func:`query_api`)."""
        return query_api(self.url, promql)

    def wait_for_samples(self, metric: str, count: int, timeout_s: float) -> None:
        """Wait until ``count`` samples of ``metric`` are stored; raise if it takes too long."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}")
            try:
                result = self.query(f"count_over_time({metric}[1m])")
                if result and float(result[0]["value"][1]) >= count:
                    return
            except OSError as e:  # not listening yet
                last_error = e
            time.sleep(0.1)
        raise TimeoutError(f"prometheus stored no {count} samples of {metric} ({last_error})")

    def close(self) -> None:
        """Stop the server."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
