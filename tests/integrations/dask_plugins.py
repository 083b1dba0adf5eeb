"""Dask worker plugins for the Dask tests (importable by the worker processes)."""

from __future__ import annotations

from distributed import WorkerPlugin

from tasktrace.integrations.dask_relay import RELAY_OP

_RECORDS = ("log-event", RELAY_OP)  # the records' messages (events, or relayed: dask_relay)


class DelayRecordEvents(WorkerPlugin):
    """A Dask worker plugin that delays the worker's record messages by ``delay_s``.

    Stands in for a batch of records still on its way to the client when the client's
    request for what the workers hold has been answered (the two take different routes).
    """

    name = "delay-record-events"

    def __init__(self, delay_s: float) -> None:
        """Keep the delay (seconds)."""
        self.delay_s = delay_s
        self.original: object = None

    def setup(self, worker: object) -> None:
        """Wrap the worker's batched stream so that record messages leave ``delay_s`` late."""
        stream = worker.batched_stream  # type: ignore[attr-defined]
        send = self.original = stream.send
        loop = worker.loop  # type: ignore[attr-defined]

        def delayed_send(*msgs: dict[str, object]) -> None:
            events = [m for m in msgs if m.get("op") in _RECORDS]
            rest = [m for m in msgs if m.get("op") not in _RECORDS]
            if rest:
                send(*rest)
            for m in events:
                loop.call_later(self.delay_s, send, m)

        stream.send = delayed_send

    def teardown(self, worker: object) -> None:
        """Give the stream its own ``send`` back."""
        worker.batched_stream.send = self.original  # type: ignore[attr-defined]
