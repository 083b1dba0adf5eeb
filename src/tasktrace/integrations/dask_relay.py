"""The Dask integration's record route: worker to scheduler to the set-up client, nothing kept.

Dask events (``worker.log_event`` to a topic a client subscribes to) are kept by the scheduler
in its event log (up to ``distributed.admin.low-level-log-length`` events per topic, readable by
any client with ``get_events``): a long run's task records would pile up there. Records take
this route instead:

- **Worker**: :func:`post` puts a batch on the worker's stream to the scheduler (the stream
  that carries the worker's own messages) as a :data:`RELAY_OP` message.
- **Scheduler**: a :class:`RecordRelay` (a ``SchedulerPlugin``, one per set-up client,
  registered by :func:`tasktrace.integrations.dask.setup`) installs the handler of that message,
  which passes the batch on at once to each set-up client still connected, as an event of
  :data:`TOPIC` (the client's ``subscribe_topic`` handler receives it), without storing it.
  A client that leaves takes its relay with it.

A worker posts only when the relay was registered (the scheduler then has the handler: a
message the scheduler has no handler for would break the worker's stream); otherwise it falls
back to Dask events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from distributed import Client, SchedulerPlugin
from distributed.metrics import time

from tasktrace.core.warn import WarnOnce

__all__ = ["RELAY_OP", "TOPIC", "RecordRelay", "post", "register_relay", "register_relay_async"]

_log = logging.getLogger("tasktrace.integrations.dask")
_warn = WarnOnce(_log)

TOPIC: Final = "tasktrace-records"
"""The event topic under which the set-up client receives the workers' task records."""
RELAY_OP: Final = "tasktrace-records"
"""The operation name of a batch of records on a worker's stream to the scheduler."""


class RecordRelay(SchedulerPlugin):
    """Scheduler side: passes the workers' batches on to one set-up client, keeping none.

    Args:
        client_id: The set-up client's id (``client.id``).

    Runs on the scheduler's event loop (no locking needed).
    """

    idempotent = True

    def __init__(self, client_id: str) -> None:
        """Relay to ``client_id``."""
        self.client_id = client_id
        """The client the batches go to."""
        self.name = f"tasktrace-relay-{client_id}"
        """The plugin's name on the scheduler (one per client)."""

    async def start(self, scheduler: Any) -> None:
        """Install the :data:`RELAY_OP` handler on the scheduler (once per scheduler)."""
        handler = scheduler.stream_handlers.get(RELAY_OP)
        if not isinstance(handler, _Relay) or handler.scheduler is not scheduler:
            scheduler.stream_handlers[RELAY_OP] = _Relay(scheduler)

    def remove_client(self, scheduler: Any, client: str) -> None:
        """When this relay's client leaves the scheduler, remove the relay."""
        if client == self.client_id and scheduler.plugins.get(self.name) is self:
            scheduler.remove_plugin(name=self.name)


class _Relay:
    """The scheduler's handler of a worker's :data:`RELAY_OP` message."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def __call__(self, worker: str = "", msg: Any = None, **_: Any) -> None:
        try:  # an exception here would close the worker's stream
            event = {"op": "event", "topic": TOPIC, "event": (time(), msg)}
            for plugin in list(self.scheduler.plugins.values()):
                if isinstance(plugin, RecordRelay):
                    self.scheduler.client_send(plugin.client_id, event)
        except Exception:  # noqa: BLE001 - the worker's stream must stay open
            _log.warning("tasktrace: cannot relay task records from %s", worker, exc_info=True)


def post(worker: Any, msg: dict[str, Any]) -> None:
    """Put ``msg`` (a batch of records) on ``worker``'s stream to the scheduler (any thread).

    From the worker's event loop thread it is queued at once (a worker's plugin teardown:
    before the stream closes, which sends what it queued); from another thread, at the loop's
    next turn.
    """
    full = {"op": RELAY_OP, "msg": msg}
    if worker.thread_id == threading.get_ident():
        worker.batched_send(full)
    else:
        worker.loop.add_callback(worker.batched_send, full)


def register_relay(client: Client) -> bool:
    """Register ``client``'s :class:`RecordRelay` on its scheduler (a synchronous client).

    Returns:
        Whether the scheduler took it (one that does not take pickled plugins refuses it:
        then one warning says that records travel as Dask events, kept by the scheduler).
    """
    try:
        client.register_plugin(RecordRelay(client.id))
    except Exception as e:  # noqa: BLE001 - then the records come as events
        return _refused(e)
    return True


async def register_relay_async(client: Client) -> bool:
    """:func:`register_relay` for an asynchronous client (in its event loop)."""
    try:
        await client.register_plugin(RecordRelay(client.id))
    except Exception as e:  # noqa: BLE001 - then the records come as events
        return _refused(e)
    return True


def _refused(e: Exception) -> bool:
    _warn(
        "dask-relay",
        "tasktrace: the Dask scheduler refused the record relay (%r): task records travel as "
        "Dask events, which the scheduler keeps in its event log",
        e,
    )
    return False
