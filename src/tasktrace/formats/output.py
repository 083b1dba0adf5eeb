"""Writing a report or table the user asked for, without ever replacing another file."""

from __future__ import annotations

from pathlib import Path

from tasktrace.tree.files import save_atomic

__all__ = ["check_output", "write_output"]


def check_output(path: Path, replace: bool) -> None:
    """Raise unless ``path`` may be written.

    It may be when its folder exists and it does not, or ``replace`` is true (``--force`` /
    ``overwrite=True``). The one place that decides; a later check may allow replacing files
    tasktrace wrote itself.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false (the message says how to
            replace it).
        FileNotFoundError: The folder of ``path`` does not exist.
    """
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {str(path.parent)!r} does not exist")
    if path.exists() and not replace:
        raise FileExistsError(
            f"{path} exists; tasktrace does not replace a file unless asked "
            "(--force, or overwrite=True in Python)"
        )


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by atomic replacement (:func:`~tasktrace.tree.files.save_atomic`).

    Raises:
        OSError: The file cannot be written (the previous file, if any, is left intact).
    """
    if not save_atomic(path, data):
        raise OSError(f"{path}: cannot write the output file")
