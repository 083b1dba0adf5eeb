"""``tasktrace show``: a task file (or OTLP JSON lines) as a tree with human units."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from tasktrace.cli.inputs import Failure, InputPath, load
from tasktrace.cli.meters_note import print_note, show_note
from tasktrace.cli.render import command_note, output_console, render_tree
from tasktrace.cli.reports import carbon_intensity_option
from tasktrace.core import views
from tasktrace.core.carbon import CarbonIntensity
from tasktrace.core.record import TaskRecord as Task  # the record: these read fields only
from tasktrace.core.units import friendly_bytes, friendly_duration

__all__ = ["show"]


@click.command()
@click.argument("file", type=InputPath())  # errors: one line, from _load
@click.option(
    "--depth",
    "-d",
    type=click.IntRange(min=0),
    help="Show at most this many levels below the root (0: the root alone).",
)
@click.option(
    "--filter",
    "-F",
    "text",
    help="Only tasks whose label contains TEXT or tagged TEXT (with their ancestors and "
    "their own subtasks).",
)
@click.option("--collapse", "-c", is_flag=True, help="One line per run of repeated siblings.")
@click.option("--totals", "-t", is_flag=True, help="Add totals per label pattern.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the tree, or the totals).")
@click.option(
    "--all",
    "-a",
    "show_all",
    is_flag=True,
    help="Print every task: do not collapse repeated siblings of a large tree.",
)
@carbon_intensity_option
def show(  # noqa: PLR0917 - click passes one parameter per option (by name)
    file: Path,
    depth: int | None,
    text: str | None,
    collapse: bool,
    totals: bool,
    as_json: bool,
    show_all: bool,
    carbon_intensity: float | None,
) -> None:
    """Print the task tree in FILE (a task file, OTLP JSON lines, a folder of them) in human units.

    Each line: the label, status, exit code of a failed command, duration, then the named
    measures (CPU time, with the busy cores where more than one; peak RSS; peak GPU memory;
    CPU, GPU, system and DRAM energy; CO₂e with a carbon intensity, naming the energies it is
    of where the line shows several). --totals sums the same measures per label pattern (a
    command's CPU time and peak RSS under tasktrace run, not tasktrace's). Below the tree, a
    note says which energy the file holds and why the rest is missing: as recorded where the
    file was written (by tasktrace run, or a program's root task with a file), from this
    machine's meters where the file was written here, or else what each missing measure
    needs. Piped, each task stays on one line (no wrapping); --json is the form for programs.

    A tree of more than 1,000 tasks (in view) is printed with repeated siblings collapsed, as
    with --collapse, and a note saying so; --all prints every task (slow: about 10,000 lines a
    second).
    """
    if show_all and collapse:
        raise click.UsageError("--all and --collapse cannot be used together")
    with views.paused_gc():
        task: Task = load(file)
        root = task
        if text is not None:
            filtered = views.filter_tree(task, text)
            if filtered is None:
                raise Failure(f"{file}: no task matches {text!r}")
            task = filtered
        if as_json:
            if totals:
                click.echo(json.dumps(views.label_totals(task), indent=1))
            else:
                click.echo(_depth_limited(task, depth).model_dump_json(indent=1))
            return
        console = output_console()
        size = 0 if collapse or show_all else views.count_tasks(task, depth)
        carbon = CarbonIntensity.from_settings(carbon_intensity)
        if collapse or size > views.AUTO_COLLAPSE_TASKS:
            label = functools.partial(views.task_line, carbon=carbon)
            console.print(views.render_collapsed(task, label, depth))
        else:
            console.print(render_tree(task, depth, carbon))
        if size > views.AUTO_COLLAPSE_TASKS:
            console.print(
                f"[dim]({size:,} tasks: repeated siblings collapsed; --all to print every task)[/]"
            )
        if totals:
            console.print(_totals_table(views.label_totals(task)))
        print_note(console, command_note(root) + show_note(root))


def _depth_limited(task: Task, depth: int | None) -> Task:
    if depth is None:
        return task
    if depth == 0:
        return views.pruned_copy(task, [])
    return views.pruned_copy(task, [_depth_limited(t, depth - 1) for t in task.subtasks])


def _totals_table(rows: list[dict[str, object]]) -> Table:
    table = Table("label", "tasks", "total duration", "total CPU time", "max peak RSS", "failed")
    for row in rows:
        dur, cpu = row["total_duration_s"], row["total_cpu_time_s"]
        rss = row["max_peak_memory_bytes"]
        table.add_row(
            escape(views.printable(str(row["pattern"]))),
            str(row["tasks"]),
            friendly_duration(dur) if isinstance(dur, float) else "",
            friendly_duration(cpu) if isinstance(cpu, float) else "",
            friendly_bytes(rss) if isinstance(rss, int) else "",
            str(row["failed"]),
        )
    return table
