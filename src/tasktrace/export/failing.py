"""Export failure shared between the processes of one run, through their spool folder.

The processes of a run (``tasktrace run`` and its command, a program and its pool workers)
share a spool folder (:mod:`tasktrace.tree.spool`), through which the children already send
their task records. When one of tasktrace's exporters in a process finds its endpoint failing
(an export dropped spans, or a flush got no answer within its bound), that process writes a
marker ``.export-failing-<key>.<owner>.json`` there (``owner``: the process, see
:mod:`tasktrace.tree.spool_owners`, which removes the markers of ended processes) naming the
endpoint (without credentials) and the reason; it removes the marker when an export to that
endpoint succeeds again. Names starting with ``.`` are not task records: the spool's merge
skips them.


At its exit, a process does not wait for an endpoint another process of the run found failing
(:func:`failing_elsewhere`): that process's exit already waited for it, within
``exit_timeout_s``, so ``tasktrace run`` with a hanging collector waits once, not once in the
command and again in the wrapper.

Only markers written since this process imported tasktrace count (a named spool folder,
``TASKTRACE_SPOOL``, may hold an earlier run's); a process never counts its own.

Thread-safety: both functions may be called from any thread; each marker is written by
atomic replacement. Never raises: a folder that cannot be written or read is no marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Final

from tasktrace.tree.spool import known_spool_folder
from tasktrace.tree.spool_owners import owner_id

__all__ = ["failing_elsewhere", "note_export_state"]

_log = logging.getLogger(__name__)

_PREFIX: Final = ".export-failing-"
_SINCE_NS: Final = time.time_ns()  # this process's start, as far as tasktrace knows it


def _key(where: str) -> str:
    return hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def note_export_state(where: str, reason: str | None) -> None:
    """Record in the spool folder that export to ``where`` fails (``reason``) or works (``None``).

    Args:
        where: The endpoint, without credentials (as the export warning names it).
        reason: Why it fails (the warning's reason), or ``None`` when an export succeeded.

    Does nothing in a process without a spool folder (no parent and no children reporting).
    """
    folder = known_spool_folder()
    if folder is None:
        return
    marker = folder / f"{_PREFIX}{_key(where)}.{owner_id()}.json"
    try:
        if reason is None:
            marker.unlink(missing_ok=True)
            return
        temporary = marker.with_name(f"{marker.name}.tmp")
        temporary.write_text(json.dumps({"where": where, "reason": reason}), encoding="utf-8")
        temporary.replace(marker)
    except OSError as e:
        _log.debug("tasktrace: export state marker %s not written: %r", marker, e)


def failing_elsewhere(where: str) -> str | None:
    """Return why another process of this run found ``where`` failing, or ``None``.

    Looks for a marker of :func:`note_export_state` in the spool folder written since this
    process started, by another process, for the same endpoint; returns its reason.
    """
    folder = known_spool_folder()
    if folder is None:
        return None
    own = f".{owner_id()}.json"
    try:
        markers = list(folder.glob(f"{_PREFIX}{_key(where)}.*.json"))
    except OSError:
        return None
    for marker in markers:
        if marker.name.endswith(own):
            continue
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            if marker.stat().st_mtime_ns < _SINCE_NS:
                continue  # an earlier run's, in a named spool folder
            state = json.loads(Path(marker).read_text(encoding="utf-8"))
            if state.get("where") == where:
                return str(state.get("reason") or "no answer")
    return None
