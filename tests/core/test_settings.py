"""One settings table: TASKTRACE_* over a TOML file over the defaults (core.settings)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from tasktrace.core.settings import Settings, get_settings, load_settings, reset_settings

from ..export_helpers import run_script


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


def test_an_invalid_value_gives_way_to_the_value_it_overrode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where a source's value is invalid, a lower source's valid value stands, not the default.

    Before: the lower file's ``sum`` and ``30`` were lost for the defaults (``auto``, 10.0).
    """
    (tmp_path / "lenskit.toml").write_text(
        "[tasktrace]\nmetrics_durations = 'sum'\nrefresh_interval_s = 30\n"
        "[tasktrace.prometheus]\ntimeout_s = 4\n"
    )
    (tmp_path / "tasktrace.toml").write_text(
        "[tasktrace]\nmetrics_durations = 'hist'\nrefresh_interval_s = 20\n"
        "[tasktrace.prometheus]\ntimeout_s = -1\n"
    )
    monkeypatch.setenv("TASKTRACE_REFRESH_INTERVAL_S", "soon")  # over the two files
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.metrics_durations == "sum"
    assert settings.refresh_interval_s == 20  # the variable's is invalid: tasktrace.toml's
    assert settings.prometheus.timeout_s == 4
    assert settings.origins[("metrics_durations",)].startswith("lenskit.toml")
    assert settings.origins[("refresh_interval_s",)].startswith("tasktrace.toml")
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 3, warnings
    assert any(
        "TASKTRACE_REFRESH_INTERVAL_S" in w
        and w.endswith("using 20 from refresh_interval_s in tasktrace.toml [tasktrace]")
        for w in warnings
    ), warnings
    assert any(
        w.endswith("using 'sum' from metrics_durations in lenskit.toml [tasktrace]")
        for w in warnings
    ), warnings


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
    assert f"using the default {Settings().refresh_interval_s!r}" in warning
    assert "Input should" not in warning  # pydantic's wording: "expected a number > 0.0"


def _typed_variables(model: type[BaseModel], prefix: str = "TASKTRACE_") -> list[str]:
    """Every ``TASKTRACE_*`` variable of a number or boolean setting (text can be invalid)."""
    names = []
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _typed_variables(annotation, f"{prefix}{key.upper()}__")
        elif isinstance(field.default, bool | int | float):
            names.append(f"{prefix}{key.upper()}")
    return names


@pytest.mark.parametrize("variable", _typed_variables(Settings))
def test_every_invalid_setting_names_the_default_used(
    variable: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning says which default is used, not only that one is (before: no value)."""
    monkeypatch.setenv(variable, "not-a-value")
    with caplog.at_level(logging.WARNING):
        load_settings()
    default: object = Settings()
    for part in variable.removeprefix("TASKTRACE_").lower().split("__"):
        default = getattr(default, part)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert variable in warning
    assert warning.endswith(f"; using the default {default!r}"), warning


def _seconds_variables(model: type[BaseModel], prefix: str = "TASKTRACE_") -> list[str]:
    """Every ``TASKTRACE_*`` variable of a setting in seconds (its key ends in ``_s``)."""
    names = []
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _seconds_variables(annotation, f"{prefix}{key.upper()}__")
        elif key.endswith("_s"):
            names.append(f"{prefix}{key.upper()}")
    return names


@pytest.mark.parametrize("raw", ["inf", "1e300"])
@pytest.mark.parametrize("variable", _seconds_variables(Settings))
def test_a_seconds_setting_no_wait_can_take_warns_and_uses_the_default(
    variable: str, raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Infinite or astronomically long intervals are refused, the variable named.

    Before: accepted, then the refresh thread or the exit's flush died with an OverflowError
    traceback.
    """
    monkeypatch.setenv(variable, raw)
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    defaults = Settings()
    path = variable.removeprefix("TASKTRACE_").lower().split("__")
    value: object = settings
    default: object = defaults
    for part in path:
        value, default = getattr(value, part), getattr(default, part)
    assert value == default
    (warning,) = [r.getMessage() for r in caplog.records]
    assert variable in warning
    assert "using the default" in warning


def test_the_refresh_thread_survives_a_huge_refresh_interval(tmp_path: Path) -> None:
    """A task with a file under ``TASKTRACE_REFRESH_INTERVAL_S=1e300``: no traceback, a warning."""
    script = "from tasktrace import Task\nwith Task('t', file='t.json'):\n    pass\n"
    env = {**os.environ, "TASKTRACE_REFRESH_INTERVAL_S": "1e300"}
    done = run_script(script, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "TASKTRACE_REFRESH_INTERVAL_S" in done.stderr
    assert (tmp_path / "t.json").exists()
