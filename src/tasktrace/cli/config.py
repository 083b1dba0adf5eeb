"""``tasktrace config``: every setting in one table, each value with its source, secrets masked.

Settings are read as a task would read them in the working folder (see
:mod:`tasktrace.core.settings_sources`), and the export settings resolved as the exporters
resolve them (:mod:`tasktrace.export.effective`): every key, its value and where it came from
(a file, ``[tasktrace]`` table and all; a variable's name; ``default``). Where the settings
mention Prometheus but leave it nothing to query, what is missing follows (the warning a task
gives).

Nothing secret is printed: a password or query in a URL, a value under a secret-looking key
(``token``, ``password``...), every header value and every resource attribute value are shown
as ``***``.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasktrace.core.settings import Settings, get_settings
from tasktrace.core.settings_sources import project_folder
from tasktrace.export.effective import effective_values
from tasktrace.meters.prometheus_setup import prometheus_setup_problem

__all__ = ["config", "register"]


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
    table = Table(title="tasktrace settings")
    for column in ("key", "value", "source"):  # fold, never cut: every character is shown
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(escape(row["key"]), escape(_text(row["value"])), escape(row["source"]))
    console.print(table)
    if problem is not None:
        console.print(f"[bold]no energy from Prometheus[/bold]: {escape(problem)}")


def register(group: click.Group) -> None:
    """Add ``config`` to ``group``."""
    group.add_command(config)
