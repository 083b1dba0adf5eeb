"""The version: one value for the package, its distribution and its spans' scope (core.version)."""

from __future__ import annotations

from importlib.metadata import version

import tasktrace
from tasktrace import Task
from tasktrace.testing import InMemorySpanExporter


def test_version_is_the_distributions_and_names_the_tracer_scope(
    task_spans: InMemorySpanExporter,
) -> None:
    """``tasktrace.__version__`` is the installed version, and the version of the spans' scope."""
    assert tasktrace.__version__ == version("tasktrace")
    with Task("versioned"):
        pass
    (span,) = task_spans.get_finished_spans()
    assert span.instrumentation_scope is not None
    assert (span.instrumentation_scope.name, span.instrumentation_scope.version) == (
        "tasktrace",
        tasktrace.__version__,
    )
