"""The outcome of a task's block, with an async generator's closing told from a cancellation.

Closing a generator suspended inside ``with Task(...)`` throws ``GeneratorExit`` into it
(``close()``, ``aclose()``): the task is ``cancelled``, error "GeneratorExit: the generator
was closed before it finished" (:mod:`tasktrace.core.status`). asyncio closes an async
generator dropped after ``break`` by running its ``aclose()`` in an asyncio task of its own
(the loop's finaliser hook). When that asyncio task is cancelled before its first step, as
``asyncio.run`` does to the tasks left when the main coroutine returns right after the
``break``, the cancellation is thrown into the ``aclose()`` awaitable not yet started, which
throws it straight into the generator (CPython 3.10 to 3.13): the block ends with
``CancelledError``, although nothing of the generator's or its consumer's was cancelled and
the generator is closed. :func:`exit_outcome` records that as the generator closed early.

The rule: a ``CancelledError`` ending a block in an asyncio task whose coroutine is an async
generator's ``aclose()`` (or ``athrow()``) awaitable, thrown in where no exception was being
handled (its ``__context__`` is ``None``). A cancellation of a closing under way (the
generator's ``finally`` awaiting when the closing task is cancelled: its ``__context__`` is the
``GeneratorExit``) and a cancellation of the consumer while the generator awaits stay
``CancelledError``.

Thread-safety: reads the calling thread's running loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Final

from tasktrace.core.status import Outcome, outcome_of

__all__ = ["GENERATOR_CLOSED", "exit_outcome"]

GENERATOR_CLOSED: Final = outcome_of(GeneratorExit())
"""The outcome of a generator's task closed before its end (the one table's row)."""


async def _probe() -> AsyncGenerator[None, None]:  # pragma: no cover - never run
    yield None


def _athrow_type() -> type:
    """Return the type of ``aclose()`` / ``athrow()`` awaitables (not named in :mod:`types`)."""
    awaitable = _probe().aclose()
    awaitable.close()  # closed unstarted: no "never awaited" warning (Python 3.13)
    return type(awaitable)


_ATHROW: Final = _athrow_type()


def exit_outcome(exc: BaseException) -> Outcome:
    """Return the outcome of a task whose block ``exc`` ended (see the module docstring).

    :func:`~tasktrace.core.status.outcome_of`, but for a ``CancelledError`` that closed an
    async generator in place of ``GeneratorExit``: :data:`GENERATOR_CLOSED`.
    """
    if isinstance(exc, asyncio.CancelledError) and exc.__context__ is None and _closing():
        return GENERATOR_CLOSED
    return outcome_of(exc)


def _closing() -> bool:
    """Whether the running asyncio task runs an async generator's ``aclose()`` / ``athrow()``."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        return False
    return task is not None and type(task.get_coro()) is _ATHROW
