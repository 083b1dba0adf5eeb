"""Ray: generator remote functions run their whole body under the submitter's carried task.

Ray, with a tracing start-up hook set, wraps each remote function so that the call runs in the
OpenTelemetry context handed over by the submitter (its ``_ray_trace_ctx`` argument), and
detaches that context when the call returns. A generator function's call returns at once (a
generator object) and Ray runs its body afterwards, item by item (streaming,
``num_returns="dynamic"`` or ``num_returns=N``), with the context gone: a ``Task`` in the body
would be a tree and a trace of its own.

:func:`carry_generators` (run by :func:`tasktrace.integrations.ray.setup_tracing`, in the driver
and in every worker) has Ray wrap generator functions with :func:`carried_generator` instead:
the generator's body runs, step by step, in a context of its own made from the handed-over one
(as a coroutine runs in its task's context), so a task open across a ``yield`` stays current in
the body and does not leak into Ray's code between two items. Ray's own consumer span is not
made for a generator call (it would have ended before the body ran).

Not covered: actor methods that are generators (Ray rejects calls to them when tracing
is on, ``TypeError: got an unexpected keyword argument '_ray_trace_ctx'``; ray-project/ray
#63267), and async generator remote functions (left to Ray's own wrapper: not carried).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate

from tasktrace.core.warn import WarnOnce

__all__ = ["TRACE_ARGUMENT", "carried_generator", "carry_generators", "in_context"]

_warn = WarnOnce(logging.getLogger(__name__))

TRACE_ARGUMENT: Final = "_ray_trace_ctx"
"""The keyword argument Ray hands the submitter's OpenTelemetry carrier in."""
_INJECTOR: Final = "_inject_tracing_into_function"  # Ray's wrapper maker, in ray.remote_function
_OURS: Final = "__tasktrace_generators__"


def in_context(
    generator: Generator[Any, Any, Any], ctx: otel_context.Context
) -> Generator[Any, Any, Any]:
    """Return a generator running each step of ``generator`` with ``ctx`` current.

    The steps run in a :class:`contextvars.Context` of their own (copied from the caller's,
    with ``ctx`` attached), kept from step to step; values sent, exceptions thrown, ``close()``
    and the return value pass through as with ``yield from``.
    """
    run = contextvars.copy_context().run
    run(otel_context.attach, ctx)  # never detached: the context is the generator's alone
    return _steps(generator, run)


_Gen = Generator[Any, Any, Any]


def _steps(generator: _Gen, run: Callable[..., Any]) -> _Gen:
    step: Callable[[Any], Any] = generator.send
    arg: Any = None
    while True:
        try:
            item = run(step, arg)
        except StopIteration as stop:
            return stop.value
        try:
            arg = yield item
        except GeneratorExit:
            run(generator.close)
            raise
        except BaseException as e:  # noqa: BLE001 - thrown in: handed to the generator
            step, arg = generator.throw, e
        else:
            step = generator.send


def carried_generator(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a generator function as Ray wraps remote functions, the body under the context.

    The wrapper takes Ray's ``_ray_trace_ctx`` keyword (the submitter's carrier); with one, the
    generator it returns runs its body in the extracted context (:func:`in_context`). Ray's
    own wrapper must have been made first (it declares the keyword in ``function``'s
    signature, which the wrapper's reports through ``__wrapped__``).
    """

    @functools.wraps(function)
    def generator_with_context(
        *args: Any, _ray_trace_ctx: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        generator = function(*args, **kwargs)
        if _ray_trace_ctx is None or not inspect.isgenerator(generator):
            return generator
        return in_context(generator, propagate.extract(_ray_trace_ctx))

    return generator_with_context


def carry_generators() -> bool:
    """Have Ray wrap generator remote functions with :func:`carried_generator` (idempotent).

    Replaces Ray's wrapper maker (``ray.remote_function._inject_tracing_into_function``, a
    private name: no public API reaches it); functions are wrapped at their first ``.remote()``
    after this. Other functions keep Ray's wrapper. With a Ray that has no such name, warns
    once and returns ``False`` (generators are then not carried); else ``True``.
    """
    try:
        module = importlib.import_module("ray.remote_function")
        original = getattr(module, _INJECTOR)
    except (ImportError, AttributeError) as e:
        _warn("ray-generators", "tasktrace: Ray generator calls will not be carried: %r", e)
        return False
    if getattr(original, _OURS, False):
        return True

    def inject(function: Callable[..., Any]) -> Callable[..., Any]:
        wrapped = original(function)
        if wrapped is function or not inspect.isgeneratorfunction(function):
            return wrapped  # tracing off, or not a generator: Ray's own
        return carried_generator(function)

    setattr(inject, _OURS, True)
    setattr(module, _INJECTOR, inject)
    return True
