"""A generator run under a context: each step sees it, the code between steps does not.

:func:`~tasktrace.integrations.ray_generators.in_context` is what Ray runs for a generator
remote function (see test_ray_forms.py for the whole path through Ray); here it is driven by
hand, as Ray's executor drives it, with OpenTelemetry's real context and propagator.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from tasktrace import Task
from tasktrace.integrations.ray_generators import TRACE_ARGUMENT, carried_generator, in_context
from tasktrace.task.carriers import capture

KEY = otel_context.create_key("test-generator-key")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _seen() -> Any:
    return otel_context.get_value(KEY)


def _echo(log: list[Any]) -> Generator[Any, Any, str]:
    """Yield what the context holds; log values sent and errors thrown; return 'done'."""
    try:
        while True:
            try:
                sent = yield _seen()
                log.append(("sent", sent, _seen()))
            except ValueError as e:  # noqa: PERF203 - the test throws into it
                log.append(("thrown", str(e), _seen()))
    finally:
        log.append(("closed", _seen()))


def test_each_step_runs_in_the_context_and_nothing_leaks_between_steps() -> None:
    """Items, sent values and a thrown error are seen under the context; the caller's is not."""
    log: list[Any] = []
    gen = in_context(_echo(log), otel_context.set_value(KEY, "carried"))
    assert next(gen) == "carried"
    assert _seen() is None  # between two steps: the caller's context
    assert gen.send(1) == "carried"
    assert gen.throw(ValueError("boom")) == "carried"
    gen.close()
    assert log == [("sent", 1, "carried"), ("thrown", "boom", "carried"), ("closed", "carried")]
    assert _seen() is None


def test_return_value_and_uncaught_errors_pass_through() -> None:
    """A generator's return value ends the iteration; an error it does not catch propagates."""

    def counted() -> Generator[int, None, str]:
        yield 1
        return "done"

    gen = in_context(counted(), otel_context.Context())
    assert next(gen) == 1
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"

    def failing() -> Generator[int, None, None]:
        yield 1
        raise KeyError("inside")

    gen2 = in_context(failing(), otel_context.Context())
    next(gen2)
    with pytest.raises(KeyError, match="inside"):
        next(gen2)


def test_a_task_open_across_a_yield_stays_current_in_the_body() -> None:
    """A Task entered before a yield and left after it: the body's current task meanwhile."""
    tasks: dict[str, Task] = {}

    def body() -> Generator[int, None, None]:
        with Task("across") as tasks["across"]:
            yield 1
            with Task("inner") as tasks["inner"]:
                pass
            yield 2

    gen = in_context(body(), otel_context.Context())
    assert next(gen) == 1
    assert capture() is None  # the caller, between two steps: no task runs here
    assert list(gen) == [2]
    assert tasks["inner"].parent_id == tasks["across"].task_id
    assert tasks["across"].status.value == "finished"


def test_carried_generator_extracts_rays_argument_and_keeps_the_signature() -> None:
    """The wrapper takes Ray's trace argument; the body runs under the handed-over span."""

    def numbers(n: int) -> Generator[int, None, None]:
        for _ in range(n):
            yield trace.get_current_span().get_span_context().trace_id

    wrapped = carried_generator(numbers)
    assert wrapped.__wrapped__ is numbers  # type: ignore[attr-defined]
    carried = list(wrapped(2, **{TRACE_ARGUMENT: {"traceparent": TRACEPARENT}}))
    assert carried == [int(TRACEPARENT.split("-")[1], 16)] * 2
    assert list(wrapped(1)) == [0]  # no argument: Ray called it without tracing
