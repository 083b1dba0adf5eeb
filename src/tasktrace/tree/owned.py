"""A task file that someone else changed since this process wrote it is not replaced.

A task's file is written again and again while the task runs (at its start, at each refresh,
at its finish). Between two writes another process may write the same path (two ``tasktrace
run -f same.json`` at once, two jobs of an array given one path) or a user may put a file of
their own there. Replacing it would silently lose that record or that file, so before each
write after the first the writer compares the file at the path with the one it wrote last
(:class:`OwnedFile`: device, inode, size and modification time, one ``os.lstat``). When they
differ, the file is left alone: this task is written from then on *beside* it, to
``NAME.PID.SUFFIX`` (``same.4242.json``) in the same folder, and one warning names both paths.
A file removed since is simply written again (nothing is lost).

The check costs one ``lstat`` per write of a task that has a file; tasks without files never
reach it. A change made in the instant between the check and the write is not seen (the
same as for any writer without locks); a change made after it is, at the next write.

Thread-safety: an :class:`OwnedFile` is used under its task's write lock
(:class:`~tasktrace.tree.writer.FileTargets`), one write at a time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasktrace.tree.files import Stamp, shown, stamp

__all__ = ["OwnedFile"]

_log = logging.getLogger(__name__)


class OwnedFile:
    """Where one task's file is written now, and what this process last wrote there.

    Args:
        path: The task's file, as its owner named it.
    """

    __slots__ = ("path", "target", "written")

    def __init__(self, path: Path) -> None:
        """Start with nothing written: the first write goes to ``path``."""
        self.path = path
        """The task's file, as named."""
        self.target = path
        """Where the next write goes: :attr:`path`, or the file beside it (see module)."""
        self.written: Stamp | None = None
        """The :data:`~tasktrace.tree.files.Stamp` of the last file written, or ``None``."""

    def next_target(self) -> Path:
        """Return where to write now: :attr:`target`, or a new file beside it if it changed.

        Logs one warning when the file at :attr:`target` is not the one written last (see
        module). Never raises (a file that cannot be looked at is written as before).
        """
        if self.written is None:
            return self.target
        try:
            now = stamp(os.lstat(self.target))
        except OSError:  # removed since (nothing to lose), or out of reach: the write will say
            return self.target
        if now == self.written:
            return self.target
        changed = self.target
        self.target = _beside(self.path)
        self.written = None
        _log.warning(
            "tasktrace: task file %s was changed by someone else since this process wrote it "
            "(another process writing the same path, or a user's file); it is left as it is, "
            "and this task is written to %s instead",
            shown(changed),
            shown(self.target),
        )
        return self.target

    def saved(self, written: Stamp | None) -> None:
        """Note what the write to :attr:`target` left there (``None``: it failed)."""
        if written is not None:
            self.written = written


def _beside(path: Path) -> Path:
    """Return a free path beside ``path`` for this process: ``NAME.PID.SUFFIX`` (then ``-N``)."""
    pid = os.getpid()
    for n in range(1000):
        name = f"{path.stem}.{pid}{'' if n == 0 else f'-{n}'}{path.suffix}"
        candidate = path.with_name(name)
        if not os.path.lexists(candidate):
            return candidate
    return path.with_name(f"{path.stem}.{pid}-{os.urandom(4).hex()}{path.suffix}")
