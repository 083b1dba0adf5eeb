"""The ``meters`` record of a task file's root: this process's checks of the energy meters.

A task file records which energy was measured (each task's ``<scope>_power`` and source); why
the rest was not is known only where it ran: the built-in meters' availability checks (RAPL
unreadable, NVML missing, no Prometheus URL). The root task of every file written here, by
``tasktrace run --file`` or by a program's ``Task("x", file=...)``, records them as its
``meters`` extra data (:func:`record_meters`, called by the file writer when the root starts),
so that ``tasktrace show`` and the report, on any machine, give the reasons of the machine that
ran it (:func:`tasktrace.formats.energy_note.recorded_meters` reads them back).

Cost: the checks themselves run once a process, when the meters are built (before the first
task's clocks start); a record reads their results: about 2 µs, for roots with a file only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import BUILTIN_METERS, get_settings
from tasktrace.core.warn import WarnOnce, raise_errors
from tasktrace.meters.base import MeterCheck, meter_checks

__all__ = ["METERS_KEY", "NOT_SELECTED", "machine_checks", "meters_record", "record_meters"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

METERS_KEY = "meters"
"""The root task's extra-data key under which the meters' checks are recorded."""

NOT_SELECTED = "not selected by the meters setting (TASKTRACE_METERS)"
"""The reason given for a built-in meter the ``meters`` setting leaves out."""


def machine_checks() -> dict[str, MeterCheck]:
    """Return this process's checks of the built-in energy meters, by name.

    The checks of the meters built so far (:func:`tasktrace.meters.base.meter_checks`), plus
    each built-in meter the ``meters`` setting leaves out, as unavailable for that reason.
    Reads recorded results only (no meter is probed). Thread-safe.
    """
    checks = meter_checks()
    selected = get_settings().meters
    out = {}
    for name in BUILTIN_METERS:
        if name in checks:
            out[name] = checks[name]
        elif selected is not None and name not in selected:
            out[name] = MeterCheck(name, available=False, reason=NOT_SELECTED)
    return out


def meters_record(checks: Mapping[str, MeterCheck]) -> dict[str, dict[str, Any]]:
    """Return the built-in energy meters' checks as JSON data for a task file's ``meters``.

    ``{"nvml": {"available": false, "reason": "nvidia-ml-py is not installed (...)"},
    "rapl": {"available": true}}``; meters not in ``checks`` are left out.
    """
    record: dict[str, dict[str, Any]] = {}
    for name in BUILTIN_METERS:
        check = checks.get(name)
        if check is not None:
            record[name] = {"available": check.available}
            if check.reason is not None:
                record[name]["reason"] = check.reason
    return record


def record_meters(task: TaskRecord) -> bool:
    """Record this process's meter checks as ``task``'s ``meters`` extra data.

    Never replaces a ``meters`` the task holds (its own data, or a record from where it ran);
    records nothing when no built-in meter was checked. Call where ``task``'s tree is not being
    serialised meanwhile (under the tree's lock, or before anything else sees the task).

    Returns:
        Whether a record was added. Never raises: a failure is warned about once (raised
        instead under :func:`~tasktrace.core.warn.set_raise_errors`), and the task goes on.
    """
    try:
        extra = task.__pydantic_extra__
        if extra and METERS_KEY in extra:
            return False
        record = meters_record(machine_checks())
        if not record:
            return False
        setattr(task, METERS_KEY, record)  # the façade's checks and copy-on-write of extra
    except Exception as e:
        if raise_errors():
            raise
        _warn("record", "tasktrace: recording the meters' checks in the task file failed: %r", e)
        return False
    return True
