"""Settings warnings (core.settings): no secret quoted, key-by-key variables, the value used.

The adversarial tester's findings, each kept as the kind it is:

- a settings value quoted in a warning had its password (``prometheus = "http://alice:pw@..."``
  of the wrong shape, in ``tasktrace config`` and in every process starting a task);
- one ``TASKTRACE_*`` (or ``LK_*``) variable that could not be read cancelled every variable
  of its prefix;
- a fallback warning named a lower value that was itself invalid, not the value used;
- TOML's ``true``/``false`` were taken as 1 and 0 for number settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from tasktrace.core.redact import REDACTED, mask_value
from tasktrace.core.settings import MachineSettings, Settings, load_settings

from ..cli_helpers import run_cli
from ..export_helpers import clean_env
from .settings_files import write

SECRET = "hunter2SECRET"

_SECRET_SHAPES = {  # file name -> text: every shape of a value quoted by a warning
    "url-as-table-value": ("tasktrace.toml", f'prometheus = "http://alice:{SECRET}@prom:9090"\n'),
    "url-in-a-list": (
        "tasktrace.toml",
        f'[prometheus]\nurl = ["http://alice:{SECRET}@prom:9090"]\n',
    ),
    "url-as-a-table": (
        "tasktrace.toml",
        f'[prometheus.url]\nhost = "http://alice:{SECRET}@prom:9090"\n',
    ),
    "query-token": ("tasktrace.toml", f'prometheus = "http://prom:9090/?token={SECRET}"\n'),
    "secret-key": ("tasktrace.toml", f'[machines.x]\ndescription = {{ api_token = "{SECRET}" }}\n'),
    "headers": (
        "tasktrace.toml",
        f'[machines.x]\ndescription = {{ headers = {{ x = "{SECRET}" }} }}\n',
    ),
    "in-lenskit-toml": ("lenskit.toml", f'prometheus = ["http://alice:{SECRET}@prom:9090"]\n'),
}


@pytest.mark.parametrize("shape", sorted(_SECRET_SHAPES))
def test_no_settings_warning_quotes_a_secret(
    shape: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid value holding a password, a token or a secret key is quoted masked.

    Before: ``invalid value 'http://alice:pw@prom:9090' for prometheus in tasktrace.toml``.
    """
    name, text = _SECRET_SHAPES[shape]
    write(tmp_path, name, text)
    with caplog.at_level(logging.WARNING):
        load_settings()
    warnings = [r.getMessage() for r in caplog.records]
    assert any(w.startswith("tasktrace: invalid value") for w in warnings), warnings
    assert not [w for w in warnings if SECRET in w], warnings
    assert any(REDACTED in w for w in warnings), warnings


def test_the_value_used_instead_is_masked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The lower source's URL named as the value used has its password and query masked."""
    write(tmp_path, "lenskit.toml", f'[prometheus]\nurl = "http://bob:{SECRET}@prom:9090/?t=1"\n')
    monkeypatch.setenv("TASKTRACE_PROMETHEUS", f"http://alice:{SECRET}@prom:9090")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.prometheus.url == f"http://bob:{SECRET}@prom:9090/?t=1"  # used, not shown
    (warning,) = [r.getMessage() for r in caplog.records]
    assert SECRET not in warning
    assert warning.endswith(
        "using {'url': 'http://bob:***@prom:9090/?t=***'} from prometheus.url in lenskit.toml"
    ), warning


def test_tasktrace_config_prints_no_secret_and_says_what_the_key_expected(tmp_path: Path) -> None:
    """``tasktrace config``, a fresh process: the warning is masked and names the table's keys.

    Before: the password was printed, with ``(expected a task object)``.
    """
    write(tmp_path, "tasktrace.toml", f'prometheus = "http://alice:{SECRET}@prom:9090"\n')
    done = run_cli(["config"], tmp_path, clean_env())
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "invalid value 'http://alice:***@prom:9090' for prometheus in tasktrace.toml" in (
        done.stderr
    )
    keys = ", ".join(Settings.model_fields["prometheus"].annotation.model_fields)  # type: ignore[union-attr]
    assert f"(expected a table of {keys})" in done.stderr
    assert "task object" not in done.stderr


def test_mask_value_masks_as_config_does_at_any_depth() -> None:
    """URLs' passwords and queries, secret-looking keys and header values, in tables and lists."""
    value = {
        "url": "http://u:pw@h:1/p?q=1",
        "list": ["https://u:pw@h", "plain"],
        "nested": {"password": "pw", "n": 3},
        "headers": {"Authorization": "Bearer x"},
    }
    assert mask_value(value) == {
        "url": f"http://u:{REDACTED}@h:1/p?q={REDACTED}",
        "list": [f"https://u:{REDACTED}@h", "plain"],
        "nested": {"password": REDACTED, "n": 3},
        "headers": {"Authorization": REDACTED},
    }


def _table_variables(model: type[BaseModel], prefix: str = "TASKTRACE_") -> list[str]:
    """Every variable that takes a table as JSON (a nested model's, a mapping's), any depth."""
    names = []
    for key, field in model.model_fields.items():
        name, annotation = f"{prefix}{key.upper()}", field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [name, *_table_variables(annotation, f"{name}__")]
        elif get_origin(annotation) is dict:
            names.append(name)
            item = get_args(annotation)[1]
            if isinstance(item, type) and issubclass(item, BaseModel):
                names += _table_variables(item, f"{name}__X__")
    return names


@pytest.mark.parametrize("variable", _table_variables(Settings))
def test_one_unreadable_variable_costs_no_other_variable(
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A table's variable that holds no JSON object: it alone is invalid, the others stand.

    Before: ``TASKTRACE_PROMETHEUS=http://...`` (meant ``..._URL``) or
    ``TASKTRACE_MACHINES__X__POWER_QUERIES=q`` made every ``TASKTRACE_*`` variable ignored.
    """
    del tmp_path
    monkeypatch.setenv(variable, "http://prom:9090")
    monkeypatch.setenv("TASKTRACE_METRICS", "false")
    monkeypatch.setenv("TASKTRACE_MACHINE", "gpu1")
    monkeypatch.setenv("TASKTRACE_REFRESH_INTERVAL_S", "3")
    monkeypatch.setenv("TASKTRACE_MACHINES__GPU1__DESCRIPTION", "the GPU box")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert (settings.metrics, settings.machine, settings.refresh_interval_s) == (False, "gpu1", 3)
    assert settings.current_machine is not None
    assert settings.current_machine.description == "the GPU box"
    assert settings.origins[("metrics",)] == "TASKTRACE_METRICS"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"tasktrace: invalid value 'http://prom:9090' for {variable} ")
    assert "expected a JSON object" in warning


def test_an_unreadable_variable_gives_way_to_the_value_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``TASKTRACE_PROMETHEUS=junk`` over a file's table and a key's own variable: both stand."""
    write(tmp_path, "tasktrace.toml", '[prometheus]\nurl = "http://file:9090"\n')
    monkeypatch.setenv("TASKTRACE_PROMETHEUS", "junk")
    monkeypatch.setenv("TASKTRACE_PROMETHEUS__TIMEOUT_S", "7")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert (settings.prometheus.url, settings.prometheus.timeout_s) == ("http://file:9090", 7)
    assert settings.origins[("prometheus", "url")] == "tasktrace.toml"
    assert settings.origins[("prometheus", "timeout_s")] == "TASKTRACE_PROMETHEUS__TIMEOUT_S"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "TASKTRACE_PROMETHEUS " in warning
    assert warning.endswith(
        "using {'url': 'http://file:9090', 'timeout_s': '7'} from prometheus.url in "
        "tasktrace.toml, TASKTRACE_PROMETHEUS__TIMEOUT_S"
    ), warning


def test_an_unreadable_lenskit_variable_costs_no_other_lenskit_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``LK_PROMETHEUS=x`` is invalid alone; ``LK_MACHINE`` and ``LK_PROMETHEUS__URL`` stand."""
    monkeypatch.setenv("LK_PROMETHEUS", "x")
    monkeypatch.setenv("LK_MACHINE", "labbox")
    monkeypatch.setenv("LK_PROMETHEUS__URL", "http://prom:9090")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert (settings.machine, settings.prometheus.url) == ("labbox", "http://prom:9090")
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("tasktrace: invalid value 'x' for LK_PROMETHEUS ")
    assert "(expected a JSON object of url, " in warning  # LensKit's keys, not tasktrace's


@pytest.mark.parametrize("variable", ["TASKTRACE_PROMETHEUS", "TASKTRACE_ENERGY"])
def test_a_table_as_json_in_its_variable_is_used_and_not_called_ignored(
    variable: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``TASKTRACE_PROMETHEUS='{...}'`` is read: no warning says it is ignored (before: one did)."""
    key = variable.removeprefix("TASKTRACE_").lower()
    table: Any = getattr(Settings(), key)
    name = next(n for n, f in type(table).model_fields.items() if n.endswith("_s"))
    monkeypatch.setenv(variable, f'{{"{name}": 7}}')
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert getattr(getattr(settings, key), name) == 7
    assert settings.origins[(key, name)] == variable
    assert [r.getMessage() for r in caplog.records] == []


def test_every_warning_names_the_value_finally_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid values in four sources: each warning names lenskit.toml's 30, the one used.

    Before: the first said ``using -5 from ... tasktrace.toml``, itself invalid.
    """
    write(tmp_path, "lenskit.toml", "[tasktrace]\nrefresh_interval_s = 30\n")
    write(tmp_path, "lenskit.local.toml", '[tasktrace]\nrefresh_interval_s = "abc"\n')
    write(tmp_path, "tasktrace.toml", "refresh_interval_s = -5\n")
    monkeypatch.setenv("TASKTRACE_REFRESH_INTERVAL_S", "xyz")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.refresh_interval_s == 30
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings
    for warning, bad in zip(warnings, ["'xyz'", "-5", "'abc'"], strict=True):
        assert f"invalid value {bad} for" in warning
        assert warning.endswith("; using 30 from refresh_interval_s in lenskit.toml [tasktrace]")


def test_when_every_source_is_invalid_every_warning_names_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two invalid values and nothing valid below: both warnings name the default used."""
    write(tmp_path, "tasktrace.toml", "exit_timeout_s = -5\n")
    monkeypatch.setenv("TASKTRACE_EXIT_TIMEOUT_S", "xyz")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    default = Settings().exit_timeout_s
    assert settings.exit_timeout_s == default
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert all(w.endswith(f"; using the default {default!r}") for w in warnings), warnings


def _number_keys(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Return the key path of every number setting (``float``, ``float | None``), any depth."""
    keys = []
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _number_keys(annotation, (*path, key))
        elif float in (get_args(annotation) or (annotation,)):
            keys.append((*path, key))
    return keys


_NUMBER_KEYS = _number_keys(Settings) + [
    ("machines", "x", *key) for key in _number_keys(MachineSettings)
]


def _toml(path: tuple[str, ...], value: str) -> str:
    table = f"[{'.'.join(path[:-1])}]\n" if len(path) > 1 else ""
    return f"{table}{path[-1]} = {value}\n"


@pytest.mark.parametrize("boolean", ["true", "false"])
@pytest.mark.parametrize("path", _NUMBER_KEYS, ids=".".join)
def test_a_number_setting_refuses_a_toml_boolean(
    path: tuple[str, ...], boolean: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``exit_timeout_s = false`` is invalid (as ``TASKTRACE_EXIT_TIMEOUT_S=false`` is), not 0.

    The lower file's number stands. Before: ``true`` was 1.0, ``false`` 0.0.
    """
    write(tmp_path, "lenskit.toml", _toml(("tasktrace", *path), "7"))
    write(tmp_path, "tasktrace.toml", _toml(path, boolean))
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    value: Any = settings
    for part in path:
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    assert value == 7
    assert not isinstance(value, bool)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"invalid value {boolean.title()} for {'.'.join(path)} in tasktrace.toml" in warning
    assert "(expected a number)" in warning


@pytest.mark.parametrize("path", [p for p in _NUMBER_KEYS if len(p) == 1], ids=".".join)
def test_a_number_setting_refuses_a_boolean_given_in_code(
    path: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """``load_settings(exit_timeout_s=True)``: the code layer is as strict as the others."""
    with caplog.at_level(logging.WARNING):
        settings = load_settings(**{path[0]: True})
    assert getattr(settings, path[0]) == getattr(Settings(), path[0])
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "(expected a number)" in warning
