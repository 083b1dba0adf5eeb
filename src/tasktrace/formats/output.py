"""Writing a report or table the user asked for, without ever replacing another file.

An existing file is replaced without ``--force`` / ``overwrite=True`` only when replacing it can
lose nothing of the user's: it is empty, or it is an earlier output of the same kind that
tasktrace wrote, recognised by the mark tasktrace writes in it (:data:`OUTPUT_MARKS`): an HTML
report's ``generator`` meta tag, a LaTeX table's first comment line. CSV and Parquet tables
carry no such mark (a comment would break CSV readers): replacing one needs ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tasktrace.tree.files import check_writable, replace_file

__all__ = [
    "LATEX_MARK",
    "OUTPUT_MARKS",
    "REPORT_MARK",
    "check_output",
    "is_tasktrace_output",
    "write_output",
]

REPORT_MARK: Final = b'<meta name="generator" content="tasktrace'
"""How an HTML report written by tasktrace begins its generator tag (in its first 1,024 bytes)."""
LATEX_MARK: Final = b"% written by tasktrace table"
"""The first line of a LaTeX table written by tasktrace (a TeX comment)."""
OUTPUT_MARKS: Final = (REPORT_MARK, LATEX_MARK)
"""The marks that make an existing file an earlier tasktrace output, replaceable without asking."""
_HEAD_BYTES: Final = 1024
_UNMARKED_SUFFIXES: Final = (".csv", ".parquet")  # tables no mark can be written in


def is_tasktrace_output(path: Path) -> bool:
    """Whether ``path`` is empty or an earlier report or LaTeX table tasktrace wrote.

    Reads its first 1,024 bytes; a file that cannot be read is not (then ``--force`` decides).
    """
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    return not head or any(mark in head for mark in OUTPUT_MARKS)


def check_output(path: Path, replace: bool) -> None:
    """Raise unless ``path`` may be written.

    It may be when its folder exists and takes files (:func:`~tasktrace.tree.files.check_writable`
    creates and removes a temporary file there), and ``path`` does not exist, is empty or an
    earlier tasktrace report or LaTeX table (:func:`is_tasktrace_output`), or ``replace`` is true
    (``--force`` / ``overwrite=True``). The one place that decides, before any work.

    Raises:
        FileExistsError: ``path`` exists, is not tasktrace's output and ``replace`` is false
            (the message says how to replace it).
        FileNotFoundError: The folder of ``path`` does not exist.
        NotADirectoryError: The parent path of ``path`` is not a folder.
        OSError: The folder cannot be written (read-only, no permission, full); the message
            names ``path`` and the OS's reason.
    """
    if not path.parent.is_dir():
        if path.parent.exists():
            raise NotADirectoryError(f"{path}: {str(path.parent)!r} is not a folder")
        raise FileNotFoundError(f"{path}: folder {str(path.parent)!r} does not exist")
    if path.exists() and not replace and not (path.is_file() and is_tasktrace_output(path)):
        unmarked = path.suffix.lower() in _UNMARKED_SUFFIXES and path.is_file()
        what = (
            f" and a {path.suffix.lower()[1:].upper()} table carries no mark of who wrote it "
            "(an earlier table of tasktrace's cannot be told from yours)"
            if unmarked
            else " and is not a report or LaTeX table tasktrace wrote"
        )
        raise FileExistsError(
            f"{path} exists{what}; tasktrace does not replace it unless asked (--force, or "
            "overwrite=True in Python)"
        )
    check_writable(path)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by atomic replacement (:func:`.replace_file`).

    Raises:
        OSError: The file cannot be written; the message names ``path`` and the OS's reason
            (``r.html: cannot be written: Read-only file system``). The previous file, if any,
            is left intact.
    """
    replace_file(path, data)
