"""One settings table: TASKTRACE_* over a TOML file over the defaults (core.settings)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasktrace.core.settings import Settings, get_settings, load_settings, reset_settings


def test_environment_over_file_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable wins over the file's key; the file over the default; nested keys use ``__``."""
    (tmp_path / "tasktrace.toml").write_text(
        "[tasktrace]\nmachine = 'from-file'\nrefresh_interval_s = 30\n"
        "[tasktrace.prometheus]\nurl = 'http://file:9090'\n"
    )  # the tests run in tmp_path, where the file is looked for
    monkeypatch.setenv("TASKTRACE_MACHINE", "from-env")
    monkeypatch.setenv("TASKTRACE_PROMETHEUS__TIMEOUT_S", "7")
    settings = load_settings()
    assert settings.machine == "from-env"
    assert settings.refresh_interval_s == 30
    assert settings.prometheus.url == "http://file:9090"
    assert settings.prometheus.timeout_s == 7
    assert settings.exit_timeout_s == Settings().exit_timeout_s


def test_lenskit_toml_is_read_flat(tmp_path: Path) -> None:
    """LensKit users' lenskit.toml (machine, [prometheus], [machines.NAME]) is read unchanged."""
    (tmp_path / "lenskit.toml").write_text(
        "machine = 'lab'\n[prometheus]\nurl = 'http://prom:9090'\n"
        "[machines.lab]\npower_queries = { cpu = 'q' }\n[random]\nseed = 1\n"
    )
    reset_settings()
    settings = get_settings()
    assert settings.machine == "lab"
    assert settings.prometheus.url == "http://prom:9090"
    assert settings.current_machine is not None
    assert settings.current_machine.power_queries == {"cpu": "q"}


def test_an_invalid_value_warns_naming_the_variable_and_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad value is one warning naming the variable; its default is used, the rest stays."""
    monkeypatch.setenv("TASKTRACE_REFRESH_INTERVAL_S", "-1")
    monkeypatch.setenv("TASKTRACE_MACHINE", "rig")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.refresh_interval_s == Settings().refresh_interval_s
    assert settings.machine == "rig"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "TASKTRACE_REFRESH_INTERVAL_S" in warning
    assert "using the default" in warning
