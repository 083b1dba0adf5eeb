"""Writing a report or table the user asked for, without ever replacing another file."""

from __future__ import annotations

from pathlib import Path

from tasktrace.tree.files import check_writable, replace_file

__all__ = ["check_output", "write_output"]


def check_output(path: Path, replace: bool) -> None:
    """Raise unless ``path`` may be written.

    It may be when its folder exists and takes files (:func:`~tasktrace.tree.files.check_writable`
    creates and removes a temporary file there), and ``path`` does not exist or ``replace`` is
    true (``--force`` / ``overwrite=True``). The one place that decides, before any work; a later
    check may allow replacing files tasktrace wrote itself.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false (the message says how to
            replace it).
        FileNotFoundError: The folder of ``path`` does not exist.
        NotADirectoryError: The parent path of ``path`` is not a folder.
        OSError: The folder cannot be written (read-only, no permission, full); the message
            names ``path`` and the OS's reason.
    """
    if not path.parent.is_dir():
        if path.parent.exists():
            raise NotADirectoryError(f"{path}: {str(path.parent)!r} is not a folder")
        raise FileNotFoundError(f"{path}: folder {str(path.parent)!r} does not exist")
    if path.exists() and not replace:
        raise FileExistsError(
            f"{path} exists; tasktrace does not replace a file unless asked "
            "(--force, or overwrite=True in Python)"
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
