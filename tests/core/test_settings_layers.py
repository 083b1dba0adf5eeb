"""Settings layers merged key by key (core.settings_layers): origins, bad values, broken files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasktrace.core.settings import load_settings

from .settings_files import LENSKIT_TOML, write


def test_machine_tables_merge_key_by_key_across_files(tmp_path: Path) -> None:
    """lenskit.toml's power_queries and tasktrace.toml's carbon intensity end up in one machine."""
    write(tmp_path, "lenskit.toml", LENSKIT_TOML)
    write(tmp_path, "lenskit.local.toml", 'machine = "labbox"\n')
    write(tmp_path, "tasktrace.toml", "[machines.labbox]\ncarbon_intensity_g_per_kwh = 250\n")
    settings = load_settings()
    machine = settings.current_machine
    assert machine is not None
    assert machine.description == "the lab's box"
    assert "system" in machine.power_queries
    assert machine.carbon_intensity_g_per_kwh == 250
    assert settings.origins[("machine",)] == "lenskit.local.toml"


def test_invalid_value_in_a_file_names_the_key_and_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid value in lenskit.local.toml's [tasktrace] table: one warning, default used."""
    write(tmp_path, "lenskit.local.toml", "[tasktrace.prometheus]\ntimeout_s = -1\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.prometheus.timeout_s == 2.0
    assert ("prometheus", "timeout_s") not in settings.origins
    (record,) = caplog.records
    assert "prometheus.timeout_s in lenskit.local.toml [tasktrace]" in record.getMessage()


def test_a_broken_file_is_skipped_with_one_warning_and_the_others_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """lenskit.local.toml that is not TOML: one warning naming it; lenskit.toml still applies."""
    write(tmp_path, "lenskit.toml", LENSKIT_TOML)
    write(tmp_path, "lenskit.local.toml", 'machine = "unterminated\n')
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.machine == "from-lenskit-toml"
    (record,) = caplog.records
    assert "cannot read settings file lenskit.local.toml" in record.getMessage()


def test_machine_variables_join_the_machine_of_the_same_name_in_any_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variable names are upper case; the machine table they set is the one named in any case.

    ``TASKTRACE_MACHINES__GPU_A__...`` and ``LK_MACHINES__GPU_A__...`` reach the machine
    ``GPU_A`` of ``tasktrace.toml`` and of ``TASKTRACE_MACHINE=GPU_A``, not a separate
    ``gpu_a`` that no lookup finds.
    """
    write(
        tmp_path,
        "tasktrace.toml",
        '[machines.GPU_A]\ndescription = "the big box"\n'
        '[machines.GPU_A.power_queries]\nsystem = "node_power_watts"\n',
    )
    monkeypatch.setenv("TASKTRACE_MACHINE", "GPU_A")
    monkeypatch.setenv("TASKTRACE_MACHINES__GPU_A__CARBON_INTENSITY_G_PER_KWH", "400")
    monkeypatch.setenv("TASKTRACE_MACHINES__Lab_Box__DESCRIPTION", "only here")
    settings = load_settings()
    machine = settings.current_machine
    assert machine is not None
    assert (machine.description, machine.carbon_intensity_g_per_kwh) == ("the big box", 400)
    assert "system" in machine.power_queries
    assert sorted(settings.machines) == ["GPU_A", "lab_box"]  # no spelling elsewhere: as read
    assert (
        settings.origins[("machines", "GPU_A", "carbon_intensity_g_per_kwh")]
        == "TASKTRACE_MACHINES__GPU_A__CARBON_INTENSITY_G_PER_KWH"
    )


def test_lenskit_machine_variables_join_a_selected_machine_in_any_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LK_MACHINE=Box7`` with ``LK_MACHINES__BOX7__...``: the selected machine has its table."""
    del tmp_path  # the project folder: no files
    monkeypatch.setenv("LK_MACHINE", "Box7")
    monkeypatch.setenv("LK_MACHINES__BOX7__DESCRIPTION", "rack 7")
    settings = load_settings()
    assert settings.current_machine is not None
    assert settings.current_machine.description == "rack 7"
