"""The real-Prometheus harness leaves no socket behind (tests/meters/energy_helpers.py)."""

from __future__ import annotations

import psutil
import pytest

from .energy_helpers import FakePrometheus, query_api


def _connections_to(port: int) -> list[object]:
    return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port]


def test_a_refused_query_closes_its_connection_at_once() -> None:
    """A 503 answer (Prometheus starting up): the error kept by the caller holds no socket."""
    fake = FakePrometheus(status=503, body=b"Service Unavailable")
    port = int(fake.url.rsplit(":", 1)[1])
    try:
        with pytest.raises(OSError, match="503") as caught:
            query_api(fake.url, "up")
        kept = caught.value  # as wait_for_samples keeps its last error
        assert _connections_to(port) == [], "the refused answer's socket is still open"
        assert "503" in str(kept)
    finally:
        fake.close()
