"""The energy note of ``run`` and ``show``: which meters measured, and why the others did not.

``run`` records this process's checks of the built-in energy meters in its task file (the
root's ``meters``, see :mod:`tasktrace.formats.energy_note`) and prints the note after its tree.
``show`` says what the file holds; for why the rest is missing it uses, in order: the checks the
file records, this machine's meters (checked now) where the file was written on this machine,
or else what each missing measure needs. Each source of reasons is named in the note's heading.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from tasktrace.core.ids import HOSTNAME
from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import BUILTIN_METERS, get_settings
from tasktrace.core.views import printable
from tasktrace.formats.energy_note import energy_facts, energy_note, recorded_meters
from tasktrace.meters import active_meters
from tasktrace.meters.base import MeterCheck, meter_checks

__all__ = ["machine_checks", "print_note", "run_note", "show_note"]

NOT_SELECTED = "not selected by the meters setting (TASKTRACE_METERS)"
"""The reason given for a built-in meter the ``meters`` setting leaves out."""


def machine_checks() -> dict[str, MeterCheck]:
    """Return this process's checks of the built-in energy meters, by name.

    The checks of the meters built so far (:func:`tasktrace.meters.base.meter_checks`), plus
    each built-in meter the ``meters`` setting leaves out, as unavailable for that reason.
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


def run_note(task: TaskRecord) -> list[str]:
    """Return the note for the end of ``tasktrace run``: ``task``'s energy, this run's meters."""
    return energy_note(energy_facts(task), machine_checks(), "this run's meters")


def show_note(task: TaskRecord) -> list[str]:
    """Return the note for ``tasktrace show`` of a file whose root is ``task``.

    Reasons come from the file's record; where it has none and it was written on this machine
    (same host name) and lacks some energy, from this machine's meters, checked now (this
    initialises NVML and reads the RAPL counters once); otherwise the note says what each
    missing measure needs.
    """
    facts = energy_facts(task)
    recorded = recorded_meters(task)
    if recorded is not None:
        host = printable(task.hostname or "an unknown host")
        return energy_note(facts, recorded, f"recorded by tasktrace run on {host}")
    if facts.missing() and task.hostname == HOSTNAME:
        active_meters()  # builds the meters from the settings, checking each (once a process)
        return energy_note(facts, machine_checks(), "this machine's meters now")
    return energy_note(facts, None, "")


def print_note(console: Console, lines: list[str]) -> None:
    """Print the note's lines dim, never as markup (reasons hold paths and brackets)."""
    for line in lines:
        console.print(f"[dim]{escape(line)}[/]", highlight=False)
