"""Human units for terminal output: durations, bytes, joules, grams, ratios (core.units)."""

from __future__ import annotations

import pytest

from tasktrace.core.units import (
    friendly_bytes,
    friendly_duration,
    friendly_grams,
    friendly_joules,
    friendly_ratio,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0000123, "12µs"),
        (0.85, "850ms"),
        (12.345, "12.35s"),
        (187.2, "3m07.20s"),
        (7503.0, "2h05m03s"),
    ],
)
def test_durations_read_in_the_largest_fitting_unit(seconds: float, text: str) -> None:
    """Seconds print as µs, ms, s, minutes or hours, whichever reads best."""
    assert friendly_duration(seconds) == text


def test_bytes_joules_grams_and_ratios() -> None:
    """Bytes in binary units, energy in J/kJ/MJ, mass in mg/g/kg/t, ratios with ×."""
    assert [friendly_bytes(n) for n in (512, 1536, 3 * 2**30)] == ["512 B", "1.5 KiB", "3.0 GiB"]
    assert [friendly_joules(j) for j in (850, 12_300, 4.1e6)] == ["850.0 J", "12.3 kJ", "4.10 MJ"]
    assert [friendly_grams(g) for g in (0.85, 400, 12_300, 1.2e6)] == [
        "850 mg",
        "400 g",
        "12.3 kg",
        "1.2 t",
    ]
    assert [friendly_ratio(r) for r in (0.059, 12.5)] == ["0.059×", "12.5×"]
