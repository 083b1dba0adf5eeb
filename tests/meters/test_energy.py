"""Energy meters combined and installed for tasks: priority rule, settings, Task fields, spans."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task
from tasktrace.core import attributes as attr
from tasktrace.core.settings import Settings, get_settings, load_settings, reset_settings
from tasktrace.meters import active_meters, rapl, reset_meters
from tasktrace.meters.base import MeterReading
from tasktrace.meters.energy import EnergyMeter, default_energy_meters, merge_readings
from tasktrace.meters.prometheus import PrometheusMeter
from tasktrace.meters.rapl import RaplMeter

from .conftest import EXPORTER_RATE_W, PROMETHEUS_JOB, PROMETHEUS_SCRAPE_S
from .energy_helpers import (
    JoulesExporter,
    PrometheusServer,
    RaplTree,
    free_port,
    make_fake_pynvml,
)

LENSKIT_TOML = """\
# A LensKit project's lenskit.toml, as LensKit documents it.
machine = "{machine}"

[random]
seed = 20250801

[prometheus]
url = "{url}"

[machines.{machine}]
description = "The lab's GPU box"
idle_watts = 95

[machines.{machine}.power_queries]
system = "sum(increase({metric}{{{{job='{{machine}}'}}}}[{{elapsed}}ms]))"
cpu = "sum(increase({metric}{{{{job='{{machine}}'}}}}[{{elapsed}}ms])) / 2"
"""


class _Fixed:
    """A meter returning a fixed reading."""

    def __init__(self, name: str, reading: MeterReading) -> None:
        self.name = name
        self.reading = reading

    def available(self) -> bool:
        return True

    def start(self) -> None:
        return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        return self.reading


def _rapl_settings(tree: RaplTree, **kwargs: object) -> Settings:
    return Settings.model_validate({"energy": {"rapl_root": tree.root}, **kwargs})


def test_prometheus_value_for_a_scope_wins_over_the_local_meter() -> None:
    """Per scope, the first meter with a value provides value, source, scope and flag."""
    prom = {"cpu_power": 50.0, "cpu_energy_source": "prometheus", "cpu_energy_scope": "query"}
    local = {
        "cpu_power": 20.0,
        "cpu_energy_source": "rapl",
        "cpu_energy_scope": "package",
        "cpu_energy_short_task": False,
        "dram_energy_j": 3.0,
    }
    merged = merge_readings([prom, local])
    assert merged["cpu_power"] == 50.0
    assert merged["cpu_energy_source"] == "prometheus"
    assert "cpu_energy_short_task" not in merged  # never mixed from two sources
    assert merged["dram_energy_j"] == 3.0


def test_failed_prometheus_scope_falls_back_to_the_local_meter() -> None:
    """A None from Prometheus (server down) leaves the local meter's value in place."""
    prom = {"cpu_power": None, "cpu_energy_source": None, "system_power": None}
    local = {"cpu_power": 20.0, "cpu_energy_source": "rapl"}
    merged = merge_readings([prom, local])
    assert merged["cpu_power"] == 20.0
    assert merged["cpu_energy_source"] == "rapl"
    assert merged["system_power"] is None


def test_a_failing_child_meter_is_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child meter that raises does not hide the others' values."""

    class Broken(_Fixed):
        def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
            raise RuntimeError("boom")

    meter = EnergyMeter([Broken("broken", {}), _Fixed("ok", {"gpu_power": 7.0})])
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert meter.read(meter.start(), 1.0, final=True) == {"gpu_power": 7.0}
    assert len(caplog.records) == 1


def test_default_meters_follow_the_meters_setting(rapl_tree: RaplTree, tmp_path: Path) -> None:
    """Prometheus comes first, then RAPL; the meters setting leaves out the unnamed ones."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    base = {
        "machine": "box",
        "prometheus": {"url": "http://127.0.0.1:9"},
        "machines": {"box": {"power_queries": {"system": "x"}}},
        "energy": {"rapl_root": rapl_tree.root},
    }
    (everything,) = default_energy_meters(
        Settings.model_validate({**base, "meters": ["rapl", "prometheus"]})
    )
    assert isinstance(everything, EnergyMeter)
    assert [type(m) for m in everything.active] == [PrometheusMeter, RaplMeter]
    (only_rapl,) = default_energy_meters(Settings.model_validate({**base, "meters": ["rapl"]}))
    assert [type(m) for m in only_rapl.active] == [RaplMeter]  # type: ignore[attr-defined]
    nothing = Settings.model_validate({"energy": {"rapl_root": tmp_path / "none"}, "meters": []})
    assert default_energy_meters(nothing) == []


def test_meters_setting_from_the_environment_is_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TASKTRACE_METERS=rapl,NVML selects by name, case-insensitively."""
    monkeypatch.setenv("TASKTRACE_METERS", "rapl, NVML")
    assert load_settings().meters == ["rapl", "nvml"]


def test_lenskit_toml_is_read_unchanged(tmp_path: Path) -> None:
    """A LensKit lenskit.toml (machine, [prometheus] url, power_queries) configures the meter."""
    (tmp_path / "lenskit.toml").write_text(
        LENSKIT_TOML.format(machine="labbox", url="http://127.0.0.1:9", metric="m")
    )
    settings = load_settings()
    assert settings.machine == "labbox"
    assert settings.prometheus.url == "http://127.0.0.1:9"
    machine = settings.current_machine
    assert machine is not None
    assert machine.power_queries["cpu"] == "sum(increase(m{{job='{machine}'}}[{elapsed}ms])) / 2"
    (combined,) = default_energy_meters(settings)
    prom = combined.active[0]  # type: ignore[attr-defined]
    assert isinstance(prom, PrometheusMeter)
    assert set(prom.queries) == {"system", "cpu"}
    assert prom.machine == "labbox"


def test_task_gets_rapl_energy_fields_and_span_attributes(
    rapl_tree: RaplTree, install_energy: None, task_spans: InMemorySpanExporter
) -> None:
    """With RAPL readable, a Task's cpu_power, source, scope and DRAM reach its span."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    rapl_tree.zone("intel-rapl:0:0", "dram")
    reset_settings(_rapl_settings(rapl_tree, meters=["rapl"]))
    with Task("work") as task:
        rapl_tree.advance("intel-rapl:0", 2_500_000)
        rapl_tree.advance("intel-rapl:0:0", 500_000)
    assert task.cpu_power == pytest.approx(2.5)
    assert task.dram_energy_j == pytest.approx(0.5)
    assert task.cpu_energy_source == "rapl"
    (span,) = task_spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[attr.CPU_ENERGY_J] == pytest.approx(2.5)
    assert span.attributes[attr.CPU_ENERGY_SOURCE] == "rapl"
    assert span.attributes[attr.CPU_ENERGY_SCOPE] == "package"
    assert span.attributes[attr.DRAM_ENERGY_J] == pytest.approx(0.5)
    assert attr.GPU_ENERGY_SOURCE not in span.attributes
    restored = Task.model_validate_json(task.model_dump_json())
    assert restored.cpu_energy_scope == "package"


def test_unmeasured_energy_stays_none_and_out_of_the_file(
    tmp_path: Path, install_energy: None
) -> None:
    """Where nothing can measure, energy is None (never 0) and no energy extras are written."""
    reset_settings(
        Settings.model_validate({"energy": {"rapl_root": tmp_path / "none"}, "meters": ["rapl"]})
    )
    assert active_meters() == ()
    with Task("work") as task:
        pass
    assert task.cpu_power is None
    dumped = task.model_dump(mode="json")
    assert "cpu_energy_source" not in dumped
    assert dumped["cpu_power"] is None


@pytest.mark.slow
def test_task_energy_from_prometheus_wins_over_rapl(  # noqa: PLR0917 - pytest fixtures
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
    rapl_tree: RaplTree,
    tmp_path: Path,
    install_energy: None,
    task_spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through lenskit.toml and a real Prometheus: system and cpu energy come from the queries."""
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server, exporter = prometheus_server
    (tmp_path / "lenskit.toml").write_text(
        LENSKIT_TOML.format(machine=PROMETHEUS_JOB, url=server.url, metric=exporter.metric)
        + f"\n[tasktrace.energy]\nrapl_root = '{rapl_tree.root}'\n"
    )
    monkeypatch.setenv("TASKTRACE_PROMETHEUS__SCRAPE_INTERVAL_S", str(PROMETHEUS_SCRAPE_S))
    rapl_tree.zone("intel-rapl:0", "package-0")
    rapl_tree.zone("intel-rapl:0:0", "dram")
    reset_settings()
    assert get_settings().machine == PROMETHEUS_JOB
    with Task("work") as task:
        rapl_tree.advance("intel-rapl:0", 1_000_000)
        rapl_tree.advance("intel-rapl:0:0", 250_000)
        time.sleep(1.5)
    assert task.duration is not None
    expected_j = EXPORTER_RATE_W * task.duration
    tolerance_j = EXPORTER_RATE_W * PROMETHEUS_SCRAPE_S
    assert task.system_power == pytest.approx(expected_j, abs=tolerance_j)
    assert task.cpu_power == pytest.approx(expected_j / 2, abs=tolerance_j)
    assert task.cpu_energy_source == "prometheus"
    assert task.dram_energy_j == pytest.approx(0.25)  # RAPL still reports what only it measures
    (span,) = task_spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[attr.SYSTEM_ENERGY_SOURCE] == "prometheus"
    assert span.attributes[attr.SYSTEM_ENERGY_J] == pytest.approx(task.system_power)


def test_task_with_prometheus_down_finishes_with_local_values(
    rapl_tree: RaplTree,
    install_energy: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prometheus unreachable: the task finishes, system_power None, cpu from RAPL, one warning."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    reset_settings(
        _rapl_settings(
            rapl_tree,
            machine="box",
            prometheus={"url": f"http://127.0.0.1:{free_port()}", "retry_after_s": 0},
            machines={"box": {"power_queries": {"system": "a[{elapsed}ms]", "cpu": "b"}}},
        )
    )
    tasks = []
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with Task("work") as task:
                rapl_tree.advance("intel-rapl:0", 3_000_000)
            tasks.append(task)
    assert [t.system_power for t in tasks] == [None, None]
    assert [t.cpu_power for t in tasks] == [pytest.approx(3.0), pytest.approx(3.0)]
    assert [t.cpu_energy_source for t in tasks] == ["rapl", "rapl"]
    assert len([r for r in caplog.records if "Prometheus" in r.getMessage()]) == 1


def test_meters_asked_for_by_name_warn_when_unknown_or_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asking for rapl and foo where neither can measure: one warning for each, no meter."""
    from tasktrace.core.settings import EnergySettings

    settings = Settings(meters=["rapl", "foo"], energy=EnergySettings(rapl_root=tmp_path))
    with caplog.at_level(logging.WARNING):
        assert default_energy_meters(settings) == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("unknown meter 'foo'" in m for m in messages) == 1, messages
    assert sum("meter 'rapl' was asked for" in m for m in messages) == 1, messages


def _warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


@pytest.mark.usefixtures("install_energy")
def test_meters_asked_for_warn_once_however_often_they_are_rebuilt(
    rapl_tree: RaplTree, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TASKTRACE_METERS=rapl,nvml,foo where none can measure: one warning each, with the why."""
    rapl_tree.zone("intel-rapl:0", "package-0")
    real_read = rapl._read_uj

    def denied(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(rapl, "_read_uj", denied)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    monkeypatch.setenv("TASKTRACE_METERS", "rapl,nvml,foo")
    monkeypatch.setenv("TASKTRACE_ENERGY__RAPL_ROOT", str(rapl_tree.root))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            reset_settings()  # settings reloaded (a new run in the same process, a test suite)
            reset_meters()
            with Task("work") as task:
                pass
            assert task.cpu_power is None
            assert task.gpu_power is None
    rapl_warnings = _warnings_naming(caplog, "'rapl'")
    assert len(rapl_warnings) == 1, rapl_warnings
    assert "chmod" in rapl_warnings[0]  # the one warning says why and how to fix it
    nvml_warnings = _warnings_naming(caplog, "'nvml'")
    assert len(nvml_warnings) == 1, nvml_warnings
    assert "tasktrace[nvml]" in nvml_warnings[0]
    assert len(_warnings_naming(caplog, "'foo'")) == 1
    assert len(caplog.records) == 3, [r.getMessage() for r in caplog.records]


@pytest.mark.usefixtures("install_energy")
def test_meter_whose_availability_check_raises_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken pynvml (raising from its calls) is warned about once, not silently dropped."""
    broken = make_fake_pynvml([])

    def count() -> int:
        raise RuntimeError("libnvidia-ml.so: bad ELF header")

    broken.nvmlDeviceGetCount = count  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monkeypatch.setenv("TASKTRACE_ENERGY__RAPL_ROOT", str(tmp_path / "no-rapl"))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            reset_settings()
            reset_meters()
            with Task("work") as task:
                pass
            assert task.gpu_power is None
    warnings = _warnings_naming(caplog, "'nvml'")
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "bad ELF header" in warnings[0]
