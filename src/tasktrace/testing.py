"""Helpers for testing code instrumented with tasktrace (and tasktrace itself).

:func:`capture_spans` installs (once per process) an SDK tracer provider whose spans go to an
in-memory exporter, so tests can assert on the spans their tasks produced:

.. code-block:: python

    from tasktrace import Task
    from tasktrace.testing import capture_spans

    def test_my_pipeline():
        with capture_spans() as spans:
            with Task("pipeline"):
                run_pipeline()
        assert [s.name for s in spans.get_finished_spans()] == ["pipeline"]

The pytest fixture :func:`task_spans` does the same for one test; it is defined only where
pytest is installed (``from tasktrace.testing import task_spans`` raises ``ImportError``
otherwise, and ``import *`` leaves it out).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["InMemorySpanExporter", "capture_spans", "install_test_provider"]

_lock = threading.Lock()
_exporter: InMemorySpanExporter | None = None


def install_test_provider() -> InMemorySpanExporter:
    """Install a global SDK provider exporting to memory, once; return its exporter.

    Raises:
        RuntimeError: Another tracer provider is already installed globally (tasktrace's own or
            yours): call this before the first task starts.
    """
    global _exporter  # noqa: PLW0603 - one test provider per process
    with _lock:
        if _exporter is not None:
            return _exporter
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            raise RuntimeError(  # noqa: TRY004 - a state error (documented), not a bad argument
                "a tracer provider is already installed; call install_test_provider() before "
                "the first task starts"
            )
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _exporter = exporter
        return exporter


@contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Yield the process's in-memory test exporter, cleared as the ``with`` block starts.

    It holds the spans finished from then on: inside the block, and after it until the next
    :func:`capture_spans` clears it (there is one exporter per process: read what a block
    produced before starting another). Installs the test provider first
    (:func:`install_test_provider`).
    """
    exporter = install_test_provider()
    exporter.clear()
    yield exporter


try:  # the fixture is offered only where pytest is installed
    import pytest
except ImportError:  # pragma: no cover
    pass
else:
    __all__ += ["task_spans"]

    @pytest.fixture
    def task_spans() -> Iterator[InMemorySpanExporter]:
        """Pytest fixture: an in-memory exporter of the spans finished during the test."""
        with capture_spans() as exporter:
            yield exporter
