"""Helpers for the energy-meter tests: a fake powercap tree and a fake ``pynvml`` module."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import types
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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
class FakeGpu:
    """One GPU as the fake NVML sees it."""

    uuid: str
    bus_id: str
    energy_mj: int | None = 1_000_000
    """Total-energy counter; ``None``: not supported (pre-Volta)."""
    power_mw: int = 100_000
    mig: bool = False
    reads: list[str] = field(default_factory=list)


class FakeNvmlError(Exception):
    """Stands in for ``pynvml.NVMLError`` (an error code in ``value``)."""

    def __init__(self, value: int) -> None:
        """Create an error with NVML return code ``value``."""
        super().__init__(f"NVML error {value}")
        self.value = value


NOT_SUPPORTED = 3
DRIVER_NOT_LOADED = 9


def make_fake_pynvml(gpus: list[FakeGpu], *, init_error: int | None = None) -> types.ModuleType:
    """Build a module with the part of ``pynvml``'s API the NVML meter uses.

    Devices are enumerated in the order given (NVML's order), which tests make differ from PCI
    bus order.
    """
    fake = types.ModuleType("pynvml")

    def nvml_init() -> None:
        if init_error is not None:
            raise FakeNvmlError(init_error)

    def energy(handle: FakeGpu) -> int:
        handle.reads.append("energy")
        if handle.energy_mj is None:
            raise FakeNvmlError(NOT_SUPPORTED)
        return handle.energy_mj

    def power(handle: FakeGpu) -> int:
        handle.reads.append("power")
        return handle.power_mw

    def mig_mode(handle: FakeGpu) -> list[int]:
        return [1 if handle.mig else 0, 0]

    fake.NVMLError = FakeNvmlError  # type: ignore[attr-defined]
    fake.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED  # type: ignore[attr-defined]
    fake.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    fake.nvmlInit = nvml_init  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: h.uuid  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        busId=h.bus_id.encode()
    )
    fake.nvmlDeviceGetTotalEnergyConsumption = energy  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPowerUsage = power  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMigMode = mig_mode  # type: ignore[attr-defined]
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
        """Run an instant query; return the result list."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return json.load(response)["data"]["result"]

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
