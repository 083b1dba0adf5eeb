"""Which meter provider the task metrics go to, decided once and looked at again where it moves.

:func:`task_metrics` (every finish) returns the process's
:class:`~tasktrace.export.metrics.TaskMetrics`, or ``None`` when task metrics are off; the
first call decides (the ``metrics`` setting, a meter provider installed globally, the
environment's metrics export: :func:`~tasktrace.export.meter_provider.global_meter_provider`).
:func:`top_level_metrics` (a top-level task's start) decides again where the global meter
provider changed since: a provider the program installed after its first task (Logfire
configured late) gets the task metrics from its next top-level task on, as the task spans go
through a tracer provider installed late. A provider handed to :func:`reset_metrics` stays.

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Final

from opentelemetry import metrics as otel_metrics

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import get_settings
from tasktrace.export.meter_provider import global_meter_provider
from tasktrace.export.metrics import TaskMetrics
from tasktrace.export.task_totals import duration_choice

__all__ = ["enabled", "reset_metrics", "task_metrics", "top_level_metrics"]

_UNSET: Final = object()
_state: Any = _UNSET
_seen: Any = None  # the global meter provider when the state was decided (_UNSET: chosen)
_state_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_state_lock")


def _resolve() -> TaskMetrics | None:
    global _seen  # noqa: PLW0603 - decided with the state, under its lock
    _seen = otel_metrics.get_meter_provider()
    setting = get_settings().metrics
    if setting is False:
        return None
    found = global_meter_provider(setting)
    if found is None:
        return None
    # Asked for: the setting, or the environment's metrics export, for which tasktrace made
    # its own provider. Not asked for: somebody's provider found installed (its OTEL_*
    # variables are its owner's: opentelemetry-distro sets OTEL_METRICS_EXPORTER itself).
    provider, created = found
    return _metrics_for(provider, asked=setting is True or created)


_by_provider: dict[int, TaskMetrics] = {}  # one per provider: see _metrics_for


def _metrics_for(provider: Any, asked: bool = True) -> TaskMetrics:
    """Return ``provider``'s :class:`TaskMetrics`, made once; call under the lock.

    Once: the SDK keeps an instrument's first registration, so a second set of instruments on
    one provider (after :func:`reset_metrics`) would never be collected. The
    ``metrics_durations`` setting is read then (``"auto"``: the histogram where task metrics
    were ``asked`` for, else the counters): a provider keeps its first choice.
    """
    found = _by_provider.get(id(provider))
    if found is None or found.provider is not provider:
        durations = duration_choice(get_settings().metrics_durations, asked)
        found = _by_provider[id(provider)] = TaskMetrics(provider, durations)
    return found


def _after_fork_in_child() -> None:
    for found in list(_by_provider.values()):
        found.forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def task_metrics() -> TaskMetrics | None:
    """Return the process's :class:`TaskMetrics`, or ``None`` when metrics are off.

    Decided (and the provider found or created) on the first call; thread-safe.
    """
    state = _state
    if state is _UNSET:
        with _state_lock:
            if _state is _UNSET:
                _set(_resolve())
            state = _state
    return state  # type: ignore[no-any-return]


def top_level_metrics() -> TaskMetrics | None:
    """:func:`task_metrics`, decided again where the global meter provider changed since.

    Called at a top-level task's start (one look at the global provider, under a
    microsecond): a provider installed after the decision is found now.
    """
    if _state is not _UNSET and _seen is not _UNSET:
        current = otel_metrics.get_meter_provider()
        if current is not _seen:
            with _state_lock:
                if _seen is not _UNSET and current is not _seen:
                    _forget()
    return task_metrics()


def _set(value: TaskMetrics | None) -> None:
    global _state  # noqa: PLW0603 - one metrics set-up per process
    _state = value


def _forget() -> None:
    global _state  # noqa: PLW0603 - see _set
    _state = _UNSET


def enabled() -> bool:
    """Whether task metrics are recorded (cheap after the first call)."""
    return task_metrics() is not None


def reset_metrics(provider: Any = None) -> None:
    """Use ``provider`` for task metrics from now on; ``None``: decide again on next use.

    For tests and for programs that want task metrics on a provider they do not install
    globally. A provider handed here counts as task metrics asked for
    (``metrics_durations="auto"``: the histogram), unless tasktrace used it before: a provider
    keeps the instruments it was first given (the SDK keeps an instrument's first
    registration); it stays the one used whatever is installed globally later.
    """
    global _seen  # noqa: PLW0603 - under the lock, with the state
    with _state_lock:
        if provider is None:
            _forget()
        else:
            _set(_metrics_for(provider))
            _seen = _UNSET
