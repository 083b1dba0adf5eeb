"""Human units for terminal output: durations, bytes, joules, grams; the longest interval.

Every figure a view prints goes through one of these functions, and each prints a value that
is not a measurement (negative, NaN or infinite: a corrupted or hand-edited task file) as
:data:`INVALID`, never as a formatted number (``-3000000µs``, ``nanhnanmnans``).
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "INVALID",
    "MAX_SECONDS",
    "friendly_bytes",
    "friendly_duration",
    "friendly_grams",
    "friendly_joules",
    "friendly_ratio",
    "valid_measure",
    "valid_seconds",
]

MAX_SECONDS: Final = 1e9
"""The longest interval or timeout, in seconds (about 31.7 years), a setting may hold.

Waits and deadlines are computed in the clocks' integer nanoseconds: a thread's wait beyond
``threading.TIMEOUT_MAX`` (about 9.2e9 s on Linux), or a deadline past it, raises
``OverflowError`` ("timestamp out of range for platform time_t"); ``inf`` can never be waited
for. 1e9 s leaves the clocks room and is longer than any run.
"""


INVALID: Final = "—"
"""What the ``friendly_*`` functions print for a value that is not a measurement
(:func:`valid_measure` false)."""


def valid_measure(value: float) -> bool:
    """Whether ``value`` can be a measurement: finite and not negative.

    A duration, CPU time, memory, energy, mass or a ratio of them. Pure; thread-safe.
    """
    return math.isfinite(value) and value >= 0


def valid_seconds(value: float) -> bool:
    """Whether ``value`` is a usable interval in seconds: finite, from 0 to :data:`MAX_SECONDS`."""
    return math.isfinite(value) and 0 <= value <= MAX_SECONDS


def friendly_duration(seconds: float) -> str:
    """Format seconds as ``"850ms"``, ``"12.35s"``, ``"3m07.20s"`` or ``"2h05m03s"``.

    :data:`INVALID` for a value that is not a measurement (see :func:`valid_measure`).
    """
    if not valid_measure(seconds):
        return INVALID
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f}µs"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        minutes, secs = divmod(seconds, 60)
        return f"{minutes:.0f}m{secs:05.2f}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:.0f}h{minutes:02.0f}m{secs:02.0f}s"


def friendly_bytes(n: float) -> str:
    """Format a byte count with binary units (``"512 B"``, ``"1.5 KiB"``, ``"3.2 GiB"``).

    :data:`INVALID` for a value that is not a measurement (see :func:`valid_measure`).
    """
    value = float(n)
    if not valid_measure(value):
        return INVALID
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def friendly_joules(joules: float) -> str:
    """Format energy in joules (``"850 J"``, ``"12.3 kJ"``, ``"4.1 MJ"``; :data:`INVALID`)."""
    if not valid_measure(joules):
        return INVALID
    if joules < 1000:
        return f"{joules:.1f} J"
    if joules < 1e6:
        return f"{joules / 1000:.1f} kJ"
    return f"{joules / 1e6:.2f} MJ"


def friendly_grams(grams: float) -> str:
    """Format a mass in grams (``"850 mg"``, ``"400 g"``, ``"12.3 kg"``, ``"1.20 t"``).

    :data:`INVALID` for a value that is not a measurement (see :func:`valid_measure`).
    """
    if not valid_measure(grams):
        return INVALID
    if grams < 1:
        return f"{grams * 1000:.3g} mg"
    if grams < 1000:
        return f"{grams:.3g} g"
    if grams < 1e6:
        return f"{grams / 1000:.3g} kg"
    return f"{grams / 1e6:.3g} t"


def friendly_ratio(ratio: float) -> str:
    """Format a ratio (``"0.059×"``, ``"1.002×"``, ``"12.5×"``; :data:`INVALID`)."""
    if not valid_measure(ratio):
        return INVALID
    return f"{ratio:.3f}×" if ratio < 10 else f"{ratio:,.1f}×"
