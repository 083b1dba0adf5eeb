"""A LensKit project configured as LensKit documents it gets energy from a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasktrace.cli import main

from .conftest import EXPORTER_RATE_W, PROMETHEUS_JOB
from .energy_helpers import JoulesExporter, PrometheusServer
from .lenskit_project import clean_environment, run_task, write_project


def _assert_energy_within_ten_percent(fields: dict[str, object]) -> None:
    duration = fields["duration"]
    assert isinstance(duration, float)
    truth_j = EXPORTER_RATE_W * duration
    assert fields["source"] == "prometheus", fields["stderr"]
    assert fields["system_power"] == pytest.approx(truth_j, rel=0.10)


@pytest.mark.slow
def test_new_user_folder_gets_system_energy(
    prometheus_server: tuple[PrometheusServer, JoulesExporter], tmp_path: Path
) -> None:
    """The issue's new-user folder (local machine file, LK_PROMETHEUS__URL): energy within 10%."""
    server, exporter = prometheus_server
    write_project(tmp_path, PROMETHEUS_JOB, exporter.metric)
    fields = run_task(tmp_path, clean_environment(LK_PROMETHEUS__URL=server.url))
    _assert_energy_within_ten_percent(fields)
    assert fields["machine"] == PROMETHEUS_JOB
    assert "tasktrace:" not in str(fields["stderr"])  # nothing to warn about


@pytest.mark.slow
def test_lk_machine_selects_the_machine_instead_of_the_local_file(
    prometheus_server: tuple[PrometheusServer, JoulesExporter], tmp_path: Path
) -> None:
    """The same folder without lenskit.local.toml, the machine in LK_MACHINE: energy within 10%."""
    server, exporter = prometheus_server
    write_project(tmp_path, PROMETHEUS_JOB, exporter.metric, local_machine=False)
    env = clean_environment(LK_PROMETHEUS__URL=server.url, LK_MACHINE=PROMETHEUS_JOB)
    fields = run_task(tmp_path, env)
    _assert_energy_within_ten_percent(fields)


def test_config_names_the_source_of_each_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config command: machine from lenskit.local.toml, the URL from LK_PROMETHEUS__URL."""
    write_project(tmp_path, "labbox", "energy_joules_total")
    monkeypatch.setenv("LK_PROMETHEUS__URL", "http://127.0.0.1:9090")
    assert main(["config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["key"]: row for row in report["settings"]}
    assert rows["machine"] == {"key": "machine", "value": "labbox", "source": "lenskit.local.toml"}
    assert rows["prometheus.url"]["source"] == "LK_PROMETHEUS__URL"
    assert rows["prometheus.scrape_interval_s"] == {
        "key": "prometheus.scrape_interval_s",
        "value": 1.0,
        "source": "tasktrace.toml",
    }
    assert rows["machines.labbox.power_queries.system"]["source"] == "lenskit.toml"
    assert rows["refresh_interval_s"]["source"] == "default"
    assert report["prometheus_problem"] is None
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (machine,) = [line for line in lines if line.strip("│ ").startswith("machine ")]
    assert "labbox" in machine
    assert "lenskit.local.toml" in machine
    (url,) = [line for line in lines if "prometheus.url" in line]
    assert "LK_PROMETHEUS__URL" in url
