"""Values in a task file that cannot be measurements are shown as invalid, never formatted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.core.units import (
    INVALID,
    friendly_bytes,
    friendly_duration,
    friendly_grams,
    friendly_joules,
    friendly_ratio,
)

from .cli_helpers import run_cli

FORMATS = [friendly_duration, friendly_bytes, friendly_joules, friendly_grams, friendly_ratio]


@pytest.mark.parametrize("value", [-3.0, -1e-9, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_that_is_not_a_measurement_is_printed_as_invalid(fmt: object, value: float) -> None:
    """Every unit formatter prints :data:`INVALID` for a negative, NaN or infinite value."""
    assert callable(fmt)
    assert fmt(value) == INVALID


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_and_positive_values_are_figures(fmt: object) -> None:
    """0 and a positive value are formatted as figures (0 is a measurement)."""
    assert callable(fmt)
    for value in (0.0, 2.5):
        text = fmt(value)
        assert text != INVALID
        assert any(ch.isdigit() for ch in text), text


def _corrupt(path: Path) -> None:
    """Rewrite a real task file with a negative duration and NaN / infinite / negative values."""
    record = json.loads(path.read_text())
    record["duration"] = -3.0  # the root: its CPU time over it gave "(-1.4 cores)"
    record["cpu_time"] = 4.2
    child = record["subtasks"][0]
    child["duration"] = math.nan
    child["cpu_time"] = math.inf
    child["peak_memory"] = -5
    path.write_text(json.dumps(record))  # NaN, Infinity: what Python's json writes


def test_show_prints_invalid_values_as_invalid_with_one_warning(tmp_path: Path) -> None:
    """``show`` of a corrupted file: ``—`` for each invalid value and one line naming the fields.

    It printed ``-3000000µs``, ``(-1.4 cores)``, ``nanhnanmnans`` and ``-5 B`` (persona report).
    """
    path = tmp_path / "run.json"
    with Task("root", file=path), Task("child"):
        pass
    _corrupt(path)
    result = run_cli(["show", str(path)], tmp_path)
    assert result.returncode == 0, result.stderr
    root_line, child_line = result.stdout.splitlines()[:2]
    for garbage in ("nan", "inf", "-", "cores"):
        assert garbage not in root_line.split("root", 1)[1], root_line
        assert garbage not in child_line.split("child", 1)[1], child_line
    assert f"finished  {INVALID}  CPU time 4.20s" in root_line
    assert f"CPU time {INVALID}  peak RSS {INVALID}" in child_line
    (warning,) = (line for line in result.stderr.splitlines() if "not measurements" in line)
    assert warning.startswith(f"Warning: {path}: ")
    for field in ("duration (2 tasks)", "cpu_time (1 task)", "peak_memory (1 task)"):
        assert field in warning, warning


def test_compare_has_no_difference_or_ratio_of_invalid_values(tmp_path: Path) -> None:
    """``compare --json`` of a corrupted file with itself: no difference nor ratio of ``-3 s``.

    ``(-3) - (-3)`` printed as a difference of ``0µs`` beside two ``—`` values.
    """
    path = tmp_path / "run.json"
    with Task("root", file=path), Task("child"):
        pass
    _corrupt(path)
    result = run_cli(["compare", str(path), str(path), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    entries = {}

    def walk(node: object) -> None:  # every {"difference": ..., "ratio": ...} by its values
        if isinstance(node, dict):
            if "difference" in node and "values" in node:
                entries[json.dumps(node["values"])] = (node["difference"], node["ratio"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    invalid = [v for k, v in entries.items() if "-3" in k or "NaN" in k or "Infinity" in k]
    assert invalid, entries
    for difference, ratio in invalid:
        assert difference[1] is None, entries
        assert ratio[1] is None, entries


def test_show_totals_leave_invalid_values_out(tmp_path: Path) -> None:
    """``show --totals`` of a corrupted file: sums and maxima of valid values only.

    A negative duration was added to the total, a negative peak RSS made "max peak RSS 0 B",
    but only where no valid one was larger.
    """
    path = tmp_path / "run.json"
    with Task("root", file=path), Task("child"), Task("child"):
        pass
    record = json.loads(path.read_text())
    first, second = record["subtasks"][0], record["subtasks"][0]["subtasks"][0]
    first["duration"], second["duration"] = 2.0, -3.0
    first["peak_memory"], second["peak_memory"] = -5, 1024
    path.write_text(json.dumps(record))
    result = run_cli(["show", str(path), "--totals", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)
    rows = totals if isinstance(totals, list) else totals.get("totals", totals)
    (child,) = [row for row in rows if row["pattern"] == "child"]
    assert child["tasks"] == 2
    assert child["total_duration_s"] == 2.0
    assert child["max_peak_memory_bytes"] == 1024


def test_table_and_compare_say_which_values_are_not_measurements(tmp_path: Path) -> None:
    """``table`` and ``compare`` of a corrupted file warn as ``show`` does, once per file."""
    path = tmp_path / "run.json"
    with Task("root", file=path), Task("child"):
        pass
    _corrupt(path)
    for args in (["table", str(path)], ["compare", str(path), str(path)]):
        result = run_cli(args, tmp_path)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "not measurements" in line]
        assert len(warnings) == len(args) - 1, result.stderr  # one per file given
        assert warnings[0].startswith(f"Warning: {path}: ")
