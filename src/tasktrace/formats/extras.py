"""The error raised when an optional dependency (a package extra) is missing."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(package: str, extra: str, feature: str) -> ModuleNotFoundError:
    """Return the error for ``feature`` needing ``package``, installed by ``extra``.

    The message names all three: ``"tasktrace.report needs plotly, which is not installed:
    pip install 'tasktrace[report]'"``. :class:`ModuleNotFoundError` is an :class:`ImportError`.
    """
    return ModuleNotFoundError(
        f"{feature} needs {package}, which is not installed: pip install 'tasktrace[{extra}]'",
        name=package,
    )
