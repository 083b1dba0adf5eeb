"""Remote scopes made once per carrier and reused by a worker (see :class:`ScopeCache`).

Thread-safety: see :class:`ScopeCache`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tasktrace.task.carriers import SPAN_CONTEXTS_KEPT, Carrier, RemoteScope

__all__ = ["ScopeCache"]


class ScopeCache:
    """Remote scopes made once per carrier and reused (the last ``SPAN_CONTEXTS_KEPT`` carriers).

    A worker running many calls under the same submitting task needs one scope (one stand-in)
    for them all, not one per call; what differs per call goes in the scope's ``call_data``.
    Only for scopes that hand records on (``on_finished``): a kept record belongs to whoever
    calls :meth:`RemoteScope.take`. A scope dropped from the cache is freed once its calls end.

    Args:
        make: Makes the scope of a carrier (called once per carrier, under the cache's lock).

    Thread-safety: :meth:`get` may be called from any thread.
    """

    def __init__(self, make: Callable[[Carrier], RemoteScope]) -> None:
        """Start empty."""
        self._make = make
        self._lock = threading.Lock()
        self._scopes: dict[Carrier, RemoteScope] = {}

    def get(self, carrier: Carrier) -> RemoteScope:
        """Return the scope of ``carrier``, made on first use."""
        found = self._scopes.get(carrier)
        if found is not None:
            return found
        with self._lock:
            found = self._scopes.get(carrier)
            if found is None:
                if len(self._scopes) >= SPAN_CONTEXTS_KEPT:
                    self._scopes.clear()
                found = self._scopes[carrier] = self._make(carrier)
            return found
