"""Carriers, remote scopes and delivery: what the engine integrations need from the core.

**Prototype** (issue 14, phase 1) of the narrow functions listed in
``docs/_design/integrations-core-api.md``; the item numbers refer to that list. This module
re-exports :mod:`tasktrace._carrier` (driver side) and :mod:`tasktrace._remote` (worker side),
the only modules of the prototype that touch the core's internals (each place is marked
``core item N``); :mod:`tasktrace.integrations` uses only the names exported here. Once the
restructured core (issue 13) offers these functions, the three modules go away.

The path of a task's record across an engine:

1. In the driver, :func:`capture` turns the running task into a :class:`Carrier` (trace
   context, parent task id, where it came from) that the integration sends with the work.
2. In the worker, :func:`remote_scope` makes the carrier's task the parent of top-level tasks
   started inside it; their records collect in the scope's outbox (not the spool folder).
3. The integration ships :meth:`RemoteScope.take`'s records home through the engine, and the
   driver's :func:`deliver` attaches each under its parent task, running or finished.

Thread-safety: every function may be called from any thread.
"""

from tasktrace._carrier import (
    HEADER_PREFIX,
    Carrier,
    DeliveryReport,
    capture,
    deliver,
    forget_parents_for_tests,
    pull_records,
    register_record_source,
)
from tasktrace._remote import RemoteScope, remote_scope, snapshot, worker_environment

__all__ = [
    "HEADER_PREFIX",
    "Carrier",
    "DeliveryReport",
    "RemoteScope",
    "capture",
    "deliver",
    "forget_parents_for_tests",
    "pull_records",
    "register_record_source",
    "remote_scope",
    "snapshot",
    "worker_environment",
]
