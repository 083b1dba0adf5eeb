"""Fresh locks in a forked child: a lock held by another thread at ``fork()`` stays held forever.

``os.fork()`` copies only the calling thread. If another thread (the refresh thread writing a
task file, an exporter, a meter's poller) held one of tasktrace's locks at that moment, the
child inherits it locked with no thread left to release it, and the child's next task blocks
for ever (``multiprocessing`` and ``ProcessPoolExecutor`` fork workers at any moment). Each
lock registered here is replaced by a new one in the child, before any other fork hook of
tasktrace runs.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["renew_after_fork"]

_registered: list[tuple[weakref.ref[Any], str]] = []
_registry_lock = threading.Lock()


def renew_after_fork(owner: object, *names: str) -> None:
    """Give ``owner``'s lock attributes ``names`` fresh locks of the same kind in forked children.

    Args:
        owner: An object or a module (held weakly: a collected owner is skipped).
        names: Attribute names holding a ``threading.Lock`` or ``threading.RLock``.
    """
    ref = weakref.ref(owner)
    with _registry_lock:
        _registered.extend((ref, name) for name in names)


def _renew() -> None:
    global _registry_lock  # noqa: PLW0603 - a new process
    _registry_lock = threading.Lock()
    for ref, name in _registered:
        owner = ref()
        if owner is None:
            continue
        old = getattr(owner, name, None)
        new = threading.RLock() if "RLock" in type(old).__name__ else threading.Lock()
        setattr(owner, name, new)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew)
