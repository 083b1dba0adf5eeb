"""``tasktrace config`` in a terminal of a given width: names whole, never broken mid-word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.cells import cell_len

from tasktrace.cli import main

from .meters.lenskit_project import write_project

_LONG_NAMES = {  # settings from variables with long names (sources of 34 to 41 characters)
    "TASKTRACE_ENERGY__COUNTER_POLL_INTERVAL_S": "2.0",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "5000",
}


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("setup", ["defaults", "project and long variable names"])
def test_config_never_breaks_a_setting_or_variable_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: int,
    setup: str,
) -> None:
    """At 80 and 120 columns: each key a whole cell, each word of a source whole, no wider line."""
    if setup != "defaults":
        write_project(tmp_path, "labbox", "energy_joules_total")  # machines.labbox.* keys
        for name, value in _LONG_NAMES.items():
            monkeypatch.setenv(name, value)
    assert main(["config", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["settings"]
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(cell_len(line) for line in lines) <= columns
    cells = {cell.strip() for line in lines for cell in line.split("│")}  # table cells, lines
    words = {word for cell in cells for word in cell.split()}
    for row in rows:
        assert row["key"] in cells, row["key"]
        assert set(row["source"].split()) <= words, row["source"]
    sources = {row["source"] for row in rows}
    if setup != "defaults":  # the long names are there to be kept whole
        assert set(_LONG_NAMES) <= sources
