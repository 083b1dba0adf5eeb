"""Settings sources in LensKit's order (core.settings_sources): files, LK_*, TASKTRACE_*, code."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasktrace.core.settings import load_settings

from .settings_files import LENSKIT_TOML, write

LAYERS = [
    ("lenskit.toml", lambda d, m: write(d, "lenskit.toml", f'machine = "{m}"\n')),
    ("lenskit.local.toml", lambda d, m: write(d, "lenskit.local.toml", f'machine = "{m}"\n')),
    ("tasktrace.toml", lambda d, m: write(d, "tasktrace.toml", f'machine = "{m}"\n')),
    ("LK_MACHINE", lambda _d, m: None),
    ("TASKTRACE_MACHINE", lambda _d, m: None),
]


def _the_warning_of_load_settings(caplog: pytest.LogCaptureFixture) -> str:
    """Load the settings; return the one warning that logged (fails on none or several)."""
    with caplog.at_level(logging.WARNING):
        load_settings()
    (record,) = caplog.records
    return record.getMessage()


@pytest.mark.parametrize("top", range(len(LAYERS)))
def test_each_layer_overrides_the_ones_below(
    top: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With machine set in every layer up to one, that layer's value wins and is its source."""
    for number, (name, write_layer) in enumerate(LAYERS[: top + 1]):
        value = f"box-{number}"
        write_layer(tmp_path, value)
        if name.endswith("MACHINE"):
            monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.machine == f"box-{top}"
    assert settings.origins[("machine",)] == LAYERS[top][0]


def test_code_overrides_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values given in code win over TASKTRACE_* and LK_* variables."""
    monkeypatch.setenv("LK_MACHINE", "lk")
    monkeypatch.setenv("TASKTRACE_MACHINE", "tt")
    settings = load_settings(machine="code")
    assert settings.machine == "code"
    assert settings.origins[("machine",)] == "code"


def test_a_tasktrace_toml_with_one_key_hides_nothing_of_lenskit_toml(tmp_path: Path) -> None:
    """tasktrace.toml holding only [prometheus] scrape_interval_s: lenskit.toml is still read."""
    write(tmp_path, "lenskit.toml", LENSKIT_TOML)
    write(tmp_path, "tasktrace.toml", "[prometheus]\nscrape_interval_s = 1\n")
    settings = load_settings()
    assert settings.prometheus.scrape_interval_s == 1.0
    assert settings.prometheus.url == "http://prometheus.lab:9090"
    assert settings.machine == "from-lenskit-toml"
    assert settings.machines["labbox"].power_queries["system"].startswith("sum(increase(")
    assert settings.origins[("prometheus", "url")] == "lenskit.toml"
    assert settings.origins[("prometheus", "scrape_interval_s")] == "tasktrace.toml"


def test_lenskit_variables_nest_with_double_underscores(monkeypatch: pytest.MonkeyPatch) -> None:
    """LK_MACHINE, LK_PROMETHEUS__URL and LK_MACHINES__NAME__POWER_QUERIES__CPU are LensKit's."""
    monkeypatch.setenv("LK_MACHINE", "gpu1")
    monkeypatch.setenv("LK_PROMETHEUS__URL", "http://127.0.0.1:9090")
    monkeypatch.setenv("LK_MACHINES__GPU1__POWER_QUERIES__CPU", "cpu_j[{elapsed}ms]")
    settings = load_settings()
    assert settings.machine == "gpu1"
    assert settings.prometheus.url == "http://127.0.0.1:9090"
    assert settings.machines["gpu1"].power_queries == {"cpu": "cpu_j[{elapsed}ms]"}
    assert settings.origins[("prometheus", "url")] == "LK_PROMETHEUS__URL"
    assert (
        settings.origins[("machines", "gpu1", "power_queries", "cpu")]
        == "LK_MACHINES__GPU1__POWER_QUERIES__CPU"
    )


def test_lenskit_variables_set_only_lenskit_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """LK_REFRESH_INTERVAL_S and LK_PROMETHEUS__TIMEOUT_S are not tasktrace's: no effect."""
    monkeypatch.setenv("LK_REFRESH_INTERVAL_S", "1")
    monkeypatch.setenv("LK_PROMETHEUS__TIMEOUT_S", "9")
    settings = load_settings()
    assert settings.refresh_interval_s == 10.0
    assert settings.prometheus.timeout_s == 2.0


def test_tasktrace_keys_in_lenskit_files_live_under_the_tasktrace_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """[tasktrace] in lenskit.toml is read; a flat tasktrace key there is ignored, warned once."""
    write(
        tmp_path,
        "lenskit.toml",
        LENSKIT_TOML
        + "\n[energy]\nsample_interval_s = 0.5\n"
        + "\n[tasktrace]\nrefresh_interval_s = 3\n[tasktrace.prometheus]\ntimeout_s = 4\n",
    )
    write(tmp_path, "lenskit.local.toml", "[prometheus]\nscrape_interval_s = 5\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.refresh_interval_s == 3.0
    assert settings.prometheus.timeout_s == 4.0
    assert settings.energy.sample_interval_s == 0.1  # the flat [energy] table is not LensKit's
    assert settings.prometheus.scrape_interval_s == 15.0
    assert settings.origins[("refresh_interval_s",)] == "lenskit.toml [tasktrace]"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "lenskit.toml: energy is a tasktrace setting" in messages[0]
    assert "[tasktrace.energy]" in messages[0]
    assert "lenskit.local.toml: prometheus.scrape_interval_s" in messages[1]
    assert "[tasktrace.prometheus] scrape_interval_s" in messages[1]


def test_files_are_looked_up_in_lk_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LK_PROJECT_ROOT (the lenskit command's project root) is where the files are read."""
    project = tmp_path / "project"
    project.mkdir()
    write(project, "lenskit.toml", LENSKIT_TOML)
    write(project, "tasktrace.toml", "refresh_interval_s = 7\n")
    write(tmp_path, "lenskit.toml", 'machine = "the-working-folder"\n')
    monkeypatch.setenv("LK_PROJECT_ROOT", str(project))
    settings = load_settings()
    assert settings.machine == "from-lenskit-toml"
    assert settings.refresh_interval_s == 7.0
    assert settings.origins[("machine",)] == str(project / "lenskit.toml")


def test_tasktrace_config_names_tasktraces_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TASKTRACE_CONFIG replaces tasktrace.toml; LensKit's files are still read under it."""
    write(tmp_path, "lenskit.toml", LENSKIT_TOML)
    write(tmp_path, "tasktrace.toml", "refresh_interval_s = 99\n")
    other = tmp_path / "elsewhere.toml"
    other.write_text("[tasktrace]\nrefresh_interval_s = 4\n")
    monkeypatch.setenv("TASKTRACE_CONFIG", str(other))
    settings = load_settings()
    assert settings.refresh_interval_s == 4.0
    assert settings.machine == "from-lenskit-toml"
    assert settings.origins[("refresh_interval_s",)] == f"{other} [tasktrace]"


def test_unknown_key_in_tasktrace_toml_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt key in tasktrace.toml gets one warning naming it; LensKit's tables none."""
    write(tmp_path, "tasktrace.toml", "refresh_interval = 5\n[random]\nseed = 1\n")
    with caplog.at_level(logging.WARNING):
        load_settings()
    (record,) = caplog.records
    assert "unknown setting 'refresh_interval' in tasktrace.toml" in record.getMessage()


@pytest.mark.parametrize("name", ["lenskit.toml", "lenskit.local.toml", "tasktrace.toml", None])
def test_a_settings_path_that_is_a_folder_is_said_to_be_one(
    name: str | None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder where a settings file belongs gets one warning saying so, naming it.

    Before: a folder named tasktrace.toml (or lenskit.toml) was skipped without a word, and
    ``TASKTRACE_CONFIG`` naming a folder was said not to exist.
    """
    folder = tmp_path / (name or "configs")
    folder.mkdir()
    if name is None:
        monkeypatch.setenv("TASKTRACE_CONFIG", str(folder))
    message = _the_warning_of_load_settings(caplog)
    assert folder.name in message
    assert "is a folder, not a file" in message
    assert "does not exist" not in message


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("TASKTRACE_REFRESH_INTERVAL", "TASKTRACE_REFRESH_INTERVAL_S"),
        ("TASKTRACE_PROMETHEUS__URLL", "TASKTRACE_PROMETHEUS__URL"),
        ("TASKTRACE_PENDING_SPAN", "TASKTRACE_PENDING_SPANS"),
    ],
)
def test_a_misspelt_variable_is_reported_with_the_likely_name(
    variable: str,
    suggestion: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``TASKTRACE_*`` variable that names no setting gets one warning, as a file's key does.

    Before: ignored without a word (``refresh_interval`` in tasktrace.toml was warned about).
    """
    monkeypatch.setenv(variable, "1")
    for other in ("TASKTRACE_SPOOL", "TASKTRACE_PARENT_TASK_ID", "TASKTRACE_SKIP_SERVICES"):
        monkeypatch.setenv(other, "x")  # tasktrace's own variables that are not settings
    message = _the_warning_of_load_settings(caplog)
    assert f"unknown variable {variable}" in message
    assert f"did you mean {suggestion}" in message


@pytest.mark.parametrize(
    "case",
    [
        (
            "tasktrace.toml",
            "[prometheus]\nscrape_interval = 5\n",
            "prometheus.scrape_interval",
            "prometheus.scrape_interval_s",
        ),
        ("tasktrace.toml", "[energy]\nrapl_rot = '/x'\n", "energy.rapl_rot", "energy.rapl_root"),
        (
            "tasktrace.toml",
            "[machines.labbox]\ncarbon_intensity_g_per_kw = 300\n",
            "machines.labbox.carbon_intensity_g_per_kw",
            "machines.labbox.carbon_intensity_g_per_kwh",
        ),
        (
            "tasktrace.toml",
            "[machines.labbox.power_queries]\nsytem = 'sum(a[{elapsed}ms])'\n",
            "machines.labbox.power_queries.sytem",
            "machines.labbox.power_queries.system",
        ),
        (
            "lenskit.toml",
            "[tasktrace.prometheus]\nscrape_intervall_s = 5\n",
            "prometheus.scrape_intervall_s",
            "prometheus.scrape_interval_s",
        ),
        (
            "lenskit.toml",
            "[machines.labbox]\nidle_watts = 95\n[machines.labbox.power_queries]\n"
            "cpu = 'sum(b[{elapsed}ms])'\nsytem = 'sum(a[{elapsed}ms])'\n",
            "machines.labbox.power_queries.sytem",
            "machines.labbox.power_queries.system",
        ),
    ],
)
def test_a_misspelt_key_inside_a_table_is_reported_with_the_likely_name(
    case: tuple[str, str, str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key inside a table that names no setting gets one warning with the likely key.

    So does a power query scope that tasktrace never queries; LensKit's own machine keys
    (``idle_watts``) get none.

    Before: only top-level keys were checked, so ``[prometheus] scrape_interval`` in
    tasktrace.toml, or a ``sytem`` power query beside a ``cpu`` one, was ignored without a word
    (the variables of the same keys were warned about).
    """
    name, text, key, suggestion = case
    write(tmp_path, name, text)
    message = _the_warning_of_load_settings(caplog)
    assert f"unknown setting {key!r} in {name}" in message
    assert f"did you mean {suggestion!r}" in message


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        (
            "TASKTRACE_MACHINES__LABBOX__POWER_QUERIES__SYTEM",
            "TASKTRACE_MACHINES__LABBOX__POWER_QUERIES__SYSTEM",
        ),
        (
            "TASKTRACE_MACHINES__LABBOX__POWER_QUERY__SYSTEM",
            "TASKTRACE_MACHINES__LABBOX__POWER_QUERIES",
        ),
    ],
)
def test_a_misspelt_machine_variable_is_reported_with_the_likely_name(
    variable: str,
    suggestion: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A variable below a machine's name is checked as the keys of a machine table are.

    Before: everything below ``TASKTRACE_MACHINES__`` was taken as valid and ignored silently.
    """
    monkeypatch.setenv(variable, "sum(a[{elapsed}ms])")
    message = _the_warning_of_load_settings(caplog)
    assert f"unknown variable {variable}" in message
    assert f"did you mean {suggestion}" in message


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_project_root_that_is_no_folder_is_said_to_be_none(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LK_PROJECT_ROOT`` naming no folder gets one warning naming it and the variable.

    Before: the settings files were looked for there without a word, so a misspelt project
    root lost the project's machine and power queries silently (``TASKTRACE_CONFIG`` naming a
    missing file was warned about).
    """
    write(tmp_path, "lenskit.toml", LENSKIT_TOML)  # the working folder's: not read instead
    root = tmp_path / "projekt"
    if kind == "file":
        root.write_text("")
    monkeypatch.setenv("LK_PROJECT_ROOT", str(root))
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    (record,) = caplog.records
    message = record.getMessage()
    assert f"LK_PROJECT_ROOT names {root}" in message
    assert "not a folder" in message
    assert settings.machine is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LK_MACHINES__LABBOX__POWER_QUERIES__SYTEM", "sum(a[{elapsed}ms])"),
        ("LK_MACHINES", '{"labbox": {"power_queries": {"sytem": "sum(a[{elapsed}ms])"}}}'),
    ],
)
def test_a_power_query_scope_misspelt_in_a_lenskit_variable_is_reported(
    variable: str, value: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LensKit variable's power query under a key other than system, cpu or gpu is named.

    Before: warned about in lenskit.toml but not in the ``LK_*`` variables, where it was
    never run without a word.
    """
    monkeypatch.setenv(variable, value)
    message = _the_warning_of_load_settings(caplog)
    assert "unknown setting 'machines.labbox.power_queries.sytem' in LK_* variables" in message
    assert "did you mean 'machines.labbox.power_queries.system'" in message
