"""The energy note of ``run`` and ``show``: which meters measured, and why the others did not.

``run`` prints the note after its tree; its task file, as every root's file, records this
process's checks of the built-in energy meters (the root's ``meters``, see
:mod:`tasktrace.tree.meters_record`).
``show`` says what the file holds; for why the rest is missing it uses, in order: the checks the
file records, this machine's meters (checked now) where the file was written on this machine,
or else what each missing measure needs. Each source of reasons is named in the note's heading.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from tasktrace.core.ids import HOSTNAME
from tasktrace.core.record import TaskRecord
from tasktrace.core.views import printable
from tasktrace.formats.energy_note import energy_facts, energy_note, recorded_meters
from tasktrace.meters import active_meters
from tasktrace.tree.meters_record import machine_checks

__all__ = ["print_note", "run_note", "show_note"]


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
        return energy_note(facts, recorded, f"recorded on {host}")
    if facts.missing() and task.hostname == HOSTNAME:
        active_meters()  # builds the meters from the settings, checking each (once a process)
        return energy_note(facts, machine_checks(), "this machine's meters now")
    return energy_note(facts, None, "")


def print_note(console: Console, lines: list[str]) -> None:
    """Print the note's lines dim, never as markup (reasons hold paths and brackets)."""
    for line in lines:
        console.print(f"[dim]{escape(line)}[/]", highlight=False)
