"""What finished tasks added up to, per label, machine and status: the task metrics' figures.

:class:`TaskTotals` is the part of the task metrics (:mod:`tasktrace.export.metrics`) that a
finishing task calls: it adds the task's CPU seconds, energy and duration to cumulative totals
under one lock (a few additions) and keeps its duration until the next collection, when the
instruments read the totals and take the waiting durations. No OpenTelemetry call is made here.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any, Final

from tasktrace.core import attributes as attr
from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus

__all__ = [
    "LABEL",
    "MAX_WAITING_DURATIONS",
    "TaskTotals",
    "Totals",
    "common_attributes",
    "duration_choice",
]

LABEL: Final = "tasktrace.task.label"
"""Metric attribute: the task's label."""
MAX_WAITING_DURATIONS: Final = 1 << 18
"""Durations kept for the next collection at most (2 MiB); past it a finishing task records
them into the histogram itself."""

_ENERGY_FIELDS: Final = (("cpu_power", "cpu"), ("gpu_power", "gpu"), ("system_power", "enclosure"))


def common_attributes(label: str, machine: str | None) -> dict[str, Any]:
    """Return the attributes every task metric carries: the label, and the machine if set."""
    attrs: dict[str, Any] = {LABEL: label}
    if machine:
        attrs[attr.MACHINE] = machine
    return attrs


def duration_choice(setting: str, asked: bool) -> str:
    """Return how durations are reported: ``"histogram"`` or ``"sum"``.

    Args:
        setting: The ``metrics_durations`` setting (``"auto"``, ``"histogram"``, ``"sum"``).
        asked: Whether task metrics were asked for (the ``metrics`` setting true, a meter
            provider tasktrace made for the environment's metrics export, one handed to
            :func:`~tasktrace.export.metrics_setup.reset_metrics`), rather
            than on because a meter provider was found installed globally.

    Returns:
        ``setting`` itself unless it is ``"auto"``; then ``"histogram"`` if ``asked``, else
        ``"sum"`` (a found provider's owner did not ask for the histogram's cost per task).
    """
    if setting != "auto":
        return setting
    return "histogram" if asked else "sum"


class Totals:
    """What finished tasks of one label, machine and status added up to (cumulative).

    Args:
        attributes: The metric attributes of the group (label, machine, status).

    Thread-safety: changed under its :class:`TaskTotals`'s lock only.
    """

    __slots__ = ("attributes", "count", "duration_s", "durations", "energy_j", "system_s", "user_s")

    def __init__(self, attributes: dict[str, Any]) -> None:
        """Start the group at zero."""
        self.attributes = attributes
        """The group's metric attributes (the same object at every record: the SDK's key)."""
        self.user_s = 0.0
        """User CPU seconds of the finished tasks."""
        self.system_s = 0.0
        """System CPU seconds of the finished tasks."""
        self.energy_j: dict[str, float] = {}
        """Joules by ``hw.type`` (``cpu``, ``gpu``, ``enclosure``), where measured."""
        self.count = 0
        """Finished tasks with a duration."""
        self.duration_s = 0.0
        """Their durations' sum, in seconds."""
        self.durations = array("d")
        """Durations (seconds) waiting for the next collection, in finishing order."""


class TaskTotals:
    """The totals of every label, machine and status, and the durations waiting.

    Thread-safety: every method may be called from any thread (one lock).
    """

    def __init__(self, keep_durations: bool = True) -> None:
        """Start with no totals; ``keep_durations``: keep each duration for the histogram."""
        self.keep_durations = keep_durations
        """Whether each duration waits for the next collection (else only their sum, count)."""
        self._by_key: dict[tuple[str, str | None, str], Totals] = {}
        self._waiting = 0
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def finished(self, task: TaskRecord, user_s: float, system_s: float) -> bool:
        """Add a finished task's duration, CPU time and energy to its group's totals.

        Args:
            task: The finished task (its ``label``, ``machine``, ``status``, ``duration`` and
                energy fields are read).
            user_s: Its user CPU seconds (negative counts as 0).
            system_s: Its system CPU seconds (same).

        Returns:
            Whether :data:`MAX_WAITING_DURATIONS` durations now wait (then take them).
        """
        d = task.__dict__
        # The status is a TaskStatus, a str: it hashes and compares as its value.
        key = (d["label"], d["machine"], d["status"])
        duration = d["duration"]
        with self._lock:
            totals = self._by_key.get(key)
            if totals is None:
                totals = self._add(key)
            if user_s > 0.0:
                totals.user_s += user_s
            if system_s > 0.0:
                totals.system_s += system_s
            if (
                d["cpu_power"] is not None
                or d["gpu_power"] is not None
                or d["system_power"] is not None
            ):
                _add_energy(totals.energy_j, d)
            if duration is None:
                return False
            if self.keep_durations:
                totals.durations.append(duration)
                self._waiting += 1
            totals.count += 1
            totals.duration_s += duration
            return self._waiting >= MAX_WAITING_DURATIONS

    def _add(self, key: tuple[str, str | None, str]) -> Totals:
        label, machine, status = key
        attrs = common_attributes(label, machine)
        text = status.value if isinstance(status, TaskStatus) else str(status)  # plain str
        attrs[attr.STATUS] = text
        totals = self._by_key[label, machine, text] = Totals(attrs)
        return totals

    def take_durations(self) -> list[tuple[dict[str, Any], array[float]]]:
        """Return the waiting durations with their group's attributes; none wait after."""
        with self._lock:
            batches = []
            for totals in self._by_key.values():
                if totals.durations:
                    batches.append((totals.attributes, totals.durations))
                    totals.durations = array("d")
            self._waiting = 0
        return batches

    def snapshot(self) -> list[Totals]:
        """Return a copy of every group's totals (the waiting durations left out)."""
        out = []
        with self._lock:
            for t in self._by_key.values():
                copy = Totals(t.attributes)
                copy.user_s, copy.system_s, copy.energy_j = t.user_s, t.system_s, dict(t.energy_j)
                copy.count, copy.duration_s = t.count, t.duration_s
                out.append(copy)
        return out

    def forget(self) -> None:
        """Drop every total and waiting duration (a forked child's inherited figures)."""
        self._by_key = {}
        self._waiting = 0


def _add_energy(energy_j: dict[str, float], d: dict[str, Any]) -> None:
    for name, hw_type in _ENERGY_FIELDS:
        value = d[name]
        if value is not None and value >= 0:
            energy_j[hw_type] = energy_j.get(hw_type, 0.0) + value
