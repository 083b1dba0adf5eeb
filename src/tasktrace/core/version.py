"""The package version, in the lowest layer: the tracer and meter scopes are named with it."""

from __future__ import annotations

from typing import Final

__all__ = ["VERSION"]

VERSION: Final = "0.1.0"
"""The version of tasktrace (``tasktrace.__version__``)."""
