"""``tasktrace config``: every setting in one table, each value with its source, secrets masked.

Settings are read as a task would read them in the working folder (see
:mod:`tasktrace.core.settings_sources`), and the export settings resolved as the exporters
resolve them (:mod:`tasktrace.export.effective`): every key, its value and where it came from
(a file, ``[tasktrace]`` table and all; a variable's name; ``default``). Where the settings
mention Prometheus but leave it nothing to query, what is missing follows (the warning a task
gives).

The table never breaks a name: keys are kept whole on one line and sources (a variable's name,
a file) are broken between words only; the value column alone is folded to fit the terminal
(every character shown). Where the terminal is too narrow for whole names beside a value column
of :data:`VALUE_MIN_CELLS` (a long key and a long variable name at 80 columns), each setting is
listed on its own lines instead: its key, then its value and its source below it.

Nothing secret is printed: a password or query in a URL, a value under a secret-looking key
(``token``, ``password``...), every header value and every resource attribute value are shown
as ``***``.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.cells import cell_len
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from tasktrace.cli.boundary import Console
from tasktrace.core.settings import Settings, get_settings
from tasktrace.core.settings_sources import project_folder
from tasktrace.export.effective import effective_values
from tasktrace.meters.prometheus_setup import prometheus_setup_problem

__all__ = ["VALUE_MIN_CELLS", "config", "register"]

VALUE_MIN_CELLS = 20
"""The narrowest value column (terminal cells) of the table; narrower, settings are listed."""

_MEASURE_CELLS = 1_000_000  # the width a table is measured in: wider than any table


def _prometheus_meter_on(settings: Settings) -> bool:
    return settings.meters is None or "prometheus" in settings.meters


def _text(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


@click.command("config")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
)
def config(as_json: bool) -> None:
    """Print every setting, tasktrace's and the export ones, with the source of each value.

    Reads what a task started here would read: lenskit.toml, lenskit.local.toml and
    tasktrace.toml in the project folder (LK_PROJECT_ROOT, else the working folder), the LK_*
    and TASKTRACE_* variables, and the OTEL_* variables of the exporters. Secrets are masked.
    """
    folder = str(project_folder().resolve())
    settings = get_settings()
    rows = [row.as_dict() for row in effective_values()]
    problem = prometheus_setup_problem(settings) if _prometheus_meter_on(settings) else None
    if as_json:
        report = {"project_folder": folder, "settings": rows, "prometheus_problem": problem}
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    console.print(f"project folder: {escape(folder)}")
    cells = [(row["key"], _text(row["value"]), row["source"]) for row in rows]
    source_cells = _source_cells(console, cells)
    if source_cells is None:
        _print_list(console, cells)
    else:
        console.print(_table(cells, source_cells, value_cells=None))
    if problem is not None:
        console.print(f"[bold]no energy from Prometheus[/bold]: {escape(problem)}")


def _table(cells: list[tuple[str, str, str]], source_cells: int, value_cells: int | None) -> Table:
    """Build the settings table: keys whole, sources ``source_cells`` wide, values folded."""
    table = Table(title="tasktrace settings")
    table.add_column("key", no_wrap=True)  # never shrunk by rich, never wrapped
    table.add_column("value", overflow="fold", width=value_cells)  # the one column that gives
    table.add_column("source", overflow="fold", width=source_cells)  # >= its longest word
    for key, value, source in cells:
        table.add_row(escape(key), escape(value), escape(source))
    return table


def _source_cells(console: Console, cells: list[tuple[str, str, str]]) -> int | None:
    """Return the source column's width for a table that breaks no name, or ``None``.

    The table must hold every key whole, every word of every source whole (a variable's name,
    a file name) and a value column of :data:`VALUE_MIN_CELLS` (less when every value is
    shorter) within the console's width, as rich measures it (borders and padding included).
    The source column gets what is left, up to its longest source; ``None``: it does not fit.
    """
    sources = [source for _, _, source in cells]
    longest_word = max((cell_len(word) for source in sources for word in source.split()), default=1)
    longest = max((cell_len(source) for source in sources), default=1)
    value_cells = min(VALUE_MIN_CELLS, max((cell_len(value) for _, value, _ in cells), default=1))
    narrowest = _table(cells, longest_word, value_cells)
    unbounded = console.options.update_width(_MEASURE_CELLS)  # rich caps it at the width given
    spare = console.width - Measurement.get(console, unbounded, narrowest).maximum
    return None if spare < 0 else min(longest, longest_word + spare)


def _print_list(console: Console, cells: list[tuple[str, str, str]]) -> None:
    """Print each setting as its key, then its value and its source, indented below it."""
    for key, value, source in cells:
        console.print(escape(key), style="bold")
        lines = Table.grid(padding=(0, 1))
        lines.add_column(no_wrap=True)  # the labels, indented
        lines.add_column(overflow="fold")
        lines.add_row("  value", escape(value))
        lines.add_row("  source", escape(source))
        console.print(lines)


def register(group: click.Group) -> None:
    """Add ``config`` to ``group``."""
    group.add_command(config)
