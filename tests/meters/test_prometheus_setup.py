"""One warning, at the first task, for each way a LensKit project's settings idle Prometheus."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.core.settings import get_settings, reset_settings

MACHINES = """\
[machines.labbox.power_queries]
system = "increase(energy_joules_total[{elapsed}ms])"

[machines.spare]
description = "no queries here"
"""
URL = '[prometheus]\nurl = "http://127.0.0.1:9"\n'


def _prometheus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "'prometheus'" in r.getMessage()]


def _run_two_tasks(caplog: pytest.LogCaptureFixture) -> list[str]:
    reset_settings()
    with caplog.at_level(logging.WARNING):
        get_settings()
        assert _prometheus_warnings(caplog) == []  # loading says nothing: the task does
        for label in ("first", "second"):
            with Task(label) as task:
                pass
            assert task.system_power is None
    return _prometheus_warnings(caplog)


@pytest.mark.usefixtures("install_energy")
def test_machines_defined_but_none_selected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Machines with power_queries and no machine: one warning naming the ways to select one."""
    (tmp_path / "lenskit.toml").write_text(URL + MACHINES)
    (message,) = _run_two_tasks(caplog)
    assert "machines with power_queries are defined ('labbox')" in message
    assert "no machine is selected" in message
    for way in ("lenskit.local.toml", "LK_MACHINE", "TASKTRACE_MACHINE"):
        assert way in message


@pytest.mark.usefixtures("install_energy")
def test_selected_machine_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine that no [machines.NAME] defines: one warning naming it and where it was set."""
    (tmp_path / "lenskit.toml").write_text(URL + MACHINES)
    monkeypatch.setenv("LK_MACHINE", "labbx")
    (message,) = _run_two_tasks(caplog)
    assert "machine 'labbx' (from LK_MACHINE) is not defined" in message
    assert "'labbox', 'spare'" in message


@pytest.mark.usefixtures("install_energy")
def test_selected_machine_without_queries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The selected machine has no power_queries: one warning naming it."""
    (tmp_path / "lenskit.toml").write_text(URL + MACHINES)
    (tmp_path / "lenskit.local.toml").write_text('machine = "spare"\n')
    (message,) = _run_two_tasks(caplog)
    assert "machine 'spare' (from lenskit.local.toml) has no power query" in message


@pytest.mark.usefixtures("install_energy")
def test_queries_without_a_prometheus_url(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The selected machine has queries but no URL is set: one warning naming where to set it."""
    (tmp_path / "lenskit.toml").write_text(MACHINES)
    (tmp_path / "lenskit.local.toml").write_text('machine = "labbox"\n')
    (message,) = _run_two_tasks(caplog)
    assert "machine 'labbox' (from lenskit.local.toml) has power_queries" in message
    assert "no Prometheus URL is set" in message
    assert "LK_PROMETHEUS__URL" in message


@pytest.mark.usefixtures("install_energy")
def test_a_machine_label_alone_gives_no_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine label and a shell-wide URL, without any [machines] table: no warning."""
    monkeypatch.setenv("TASKTRACE_MACHINE", "laptop")
    monkeypatch.setenv("LK_PROMETHEUS__URL", "http://127.0.0.1:9")  # a shell-wide URL alone
    assert _run_two_tasks(caplog) == []


@pytest.mark.parametrize(
    "url", ["http//alice:hunter2@prom:9090", "http://alice:hunter2@prom:9090/p ?token=hunter2"]
)
@pytest.mark.usefixtures("install_energy")
def test_a_url_no_query_can_use_is_named_without_its_secrets(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped URL (``http//`` for ``http://``, a space) is one warning saying so, secrets hid.

    Before: every task queried it and warned "Prometheus answer is not JSON (unknown url type:
    'http//alice:hunter2@prom:9090/api/v1/query?...')", the password in clear, or (the space)
    "meter prometheus failed to read", saying nothing of why.
    """
    (tmp_path / "lenskit.toml").write_text(MACHINES)
    (tmp_path / "lenskit.local.toml").write_text('machine = "labbox"\n')
    monkeypatch.setenv("LK_PROMETHEUS__URL", url)
    reset_settings()
    with caplog.at_level(logging.DEBUG):
        for label in ("first", "second"):
            with Task(label) as task:
                pass
            assert task.system_power is None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text
    (message,) = _prometheus_warnings(caplog)
    assert "not an http:// or https:// URL" in message
    assert "LK_PROMETHEUS__URL" in message
