"""The ``report``, ``compare`` and ``table`` commands of the ``tasktrace`` command line.

Each is one function; :func:`register` adds them to the CLI group. The builders live in
:mod:`tasktrace.formats` (``report``: plotly; ``table -o``: pandas), imported only inside the
command that needs them, so the CLI starts without either.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic_core import to_json
from rich.markup import escape
from rich.table import Table

from tasktrace.cli.boundary import needs_extra
from tasktrace.cli.compare_table import print_comparison
from tasktrace.cli.inputs import Failure, InputPath, warn_invalid_measures
from tasktrace.cli.meters_note import print_note
from tasktrace.cli.outputs import Output, OutputPath
from tasktrace.cli.render import output_console
from tasktrace.core.lines import OVERLAPPING
from tasktrace.core.views import paused_gc, printable
from tasktrace.formats.compare import compare_runs
from tasktrace.formats.measures import MEASURES, CarbonIntensity, parse_measures
from tasktrace.formats.output import check_output
from tasktrace.formats.rows import (
    OVERLAP_SCOPES,
    Run,
    TaskFileError,
    group_rows,
    load_runs,
    task_rows,
)
from tasktrace.tree.files import shown

__all__ = ["carbon_intensity_option", "register"]


class _FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that refuses ``nan`` and ``inf`` (``1e400`` is ``inf``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


carbon_intensity_option = click.option(
    "--carbon-intensity",
    "carbon_intensity",
    type=_FiniteFloatRange(min=0),
    metavar="G_PER_KWH",
    help="Carbon intensity of the electricity in g CO₂e per kWh, for every task (default: each "
    "task's machine's carbon_intensity_g_per_kwh setting); adds emissions from measured energy.",
)
_names_option = click.option(
    "--name",
    "-n",
    "names",
    multiple=True,
    help="A name for each run, in the order of the files (default: the file names).",
)
_FORCE_HELP = "Replace OUTPUT even when it is not empty or an earlier output of this command"
_report_force_option = click.option("--force", is_flag=True, help=f"{_FORCE_HELP}.")
_table_force_option = click.option(
    "--force", is_flag=True, help=f"{_FORCE_HELP} (a CSV or Parquet table always needs it)."
)
_FILES = InputPath()  # a folder: one run's OTLP JSON-lines files (formats.replay)


def register(group: click.Group) -> None:
    """Add ``report``, ``compare`` and ``table`` to ``group``."""
    for command in (report, compare, table):
        group.add_command(command)


def _paused_gc(command: Callable[..., None]) -> Callable[..., None]:
    """Run ``command`` with the cyclic garbage collector off (see :func:`_show.paused_gc`).

    A 100,000-task file is millions of objects, none in cycles: loading it took 7.5 s with the
    collector on and 2.9 s without (measured on ``benchmarks/report_100k.py``'s file).
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        with paused_gc():
            command(*args, **kwargs)

    return run


def _carbon(intensity: float | None) -> CarbonIntensity:
    return CarbonIntensity.from_settings(intensity)


def _runs(files: Sequence[Path], names: Sequence[str], *, skip_traces: bool = True) -> list[Run]:
    """Load ``files`` as runs; every problem is one line naming the file (exit 2).

    With ``skip_traces`` and no ``names``, a Chrome trace among several files (a glob's
    ``runs/*.json``) is skipped with a warning; the runs returned are the ones to count.
    A command that needs each file as a run (compare's two) passes ``skip_traces=False``:
    a Chrome trace is then the error it is given alone.
    """
    skipped: list[str] = []  # Chrome traces among several files (runs/*.json)
    try:
        runs = load_runs(files, names or None, None if names or not skip_traces else skipped)
    except TaskFileError as e:
        raise Failure(str(e)) from None
    except ValueError as e:  # names that do not fit the files
        raise click.UsageError(printable(f"--name: {e}")) from None
    for line in skipped:
        click.echo(f"Warning: {printable(line)}", err=True)
    for run in runs:
        warn_invalid_measures(run.path, run.task)
    if not runs:
        traces = ", ".join(str(path) for path in files)
        raise Failure(
            f"no task file among {traces}: each is a Chrome trace (trace events, which hold no "
            "task tree); give the task files or OTLP JSON lines they were made from"
        )
    return runs


def _check_output(output: Output, force: bool, inputs: Sequence[Path]) -> None:
    """Refuse to replace an existing file, or one of ``inputs``, without ``--force``."""
    output.check(lambda path: check_output(path, force), inputs=inputs, force=force)


@click.command()
@click.argument("files", nargs=-1, required=True, type=_FILES)
@click.option(
    "--output",
    "-o",
    type=OutputPath(),
    required=True,
    help="The HTML file to write, or - for standard output.",
)
@_names_option
@carbon_intensity_option
@_report_force_option
@_paused_gc
def report(
    files: tuple[Path, ...],
    output: Output,
    names: tuple[str, ...],
    carbon_intensity: float | None,
    force: bool,
) -> None:
    """Write one self-contained HTML report of FILES (task files, OTLP JSON lines, folders).

    Per run: its facts, an icicle of the task tree sized by duration, CPU, memory or energy
    (switched in the page), a timeline and a sortable table per label; with several runs,
    side by side with a comparison table. Opens offline: plotly's JavaScript is embedded.
    Needs the report extra: pip install 'tasktrace[report]'.

    Example: tasktrace report runs/a.json runs/b.json -o report.html
    """
    _check_output(output, force, files)
    # before any work; without plotly: one line naming the extra (cli.boundary)
    from tasktrace.formats.report import build_report  # noqa: PLC0415 - optional extra

    runs = _runs(files, names)
    html = build_report(runs, _carbon(carbon_intensity))
    output.write(html.encode())
    click.echo(
        f"{shown(str(output))}: report of {len(runs)} run(s)", err=True
    )  # skipped traces: not


@click.command()
@click.argument("first", type=_FILES)
@click.argument("second", type=_FILES)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts): every matched task."
)
@click.option(
    "--all",
    "-a",
    "show_all",
    is_flag=True,
    help="Print a row for every task: do not fold repeated siblings of a large comparison.",
)
@_names_option
@carbon_intensity_option
@_paused_gc
def compare(  # noqa: PLR0917 - click passes one parameter per option (by name)
    first: Path,
    second: Path,
    as_json: bool,
    show_all: bool,
    names: tuple[str, ...],
    carbon_intensity: float | None,
) -> None:
    """Compare two runs task by task.

    For each task: FIRST's and SECOND's duration, CPU time, peak RSS and energy, the difference
    (SECOND − FIRST) and the ratio (SECOND / FIRST).

    Tasks are matched by their path of labels. The roots always match; where their labels
    differ and one run holds a task with the other's root label (a `tasktrace run` of a script
    against the script run directly), that task is compared with the other root, and a note
    says so. A row whose labels differ names each; a figure of a task that did not finish
    (running when its file was saved, failed, cancelled) is followed by its status, so that a
    ratio against it is not read as a real difference. Tasks only one run has are listed after
    the table, each with the count of its subtasks.

    Above 1,000 matched tasks, runs of repeated siblings are folded into one row (sums per
    run; the largest value for peaks), as show and report fold them; --all prints a row for
    every task (slow), --json lists every task.

    Example: tasktrace compare runs/baseline.json runs/new.json
    """
    runs = _runs([first, second], names, skip_traces=False)  # two runs, or an error
    result = compare_runs(runs, _carbon(carbon_intensity))
    if as_json:
        click.echo(to_json(result.to_json(), indent=1))  # in Rust: json's indent is pure Python
        return
    print_comparison(output_console(), result, runs, fold=False if show_all else None)


def _cost_table(groups: list[dict[str, Any]], by: Sequence[str], measures: Sequence[Any]) -> Table:
    """Render the groups as a rich table; measures no task has are left out."""
    measures = [
        m for m in measures if any(g[f"{m.column}_{m.aggregate}"] is not None for g in groups)
    ]
    table = Table(*by, title="Cost per " + ", ".join(by))
    table.add_column("tasks", justify="right")
    for m in measures:
        table.add_column(f"{m.aggregate} {m.title}", justify="right")
        table.add_column(f"mean {m.title}", justify="right")
    for g in groups:
        cells = [escape(printable(str(g[column]))) for column in by] + [f"{g['tasks']:,}"]
        cells.extend(
            m.cell(g[key], bool(g.get(f"{m.column}_short_tasks")))
            + (OVERLAPPING if g.get(f"{m.column}_overlapping_tasks") else "")
            for m in measures
            for key in (f"{m.column}_{m.aggregate}", f"{m.column}_mean")
        )
        table.add_row(*cells)
    return table


def _overlap_note(
    groups: list[dict[str, Any]], by: Sequence[str], measures: Sequence[Any]
) -> list[str]:
    """Return a line per group and measure whose total counts a shared part once per task."""
    lines = []
    for g in groups:
        for m in measures:
            n = g.get(f"{m.column}_overlapping_tasks")
            if not n:
                continue
            name = ", ".join(printable(str(g[column])) for column in by)
            where = "in one process" if OVERLAP_SCOPES[m.column] == "process" else "on one machine"
            whose = "its process's (every thread)" if where == "in one process" else "the machine's"
            lines.append(
                f"{OVERLAPPING} {m.title} of {name}: {n:,} of its tasks ran at the same time "
                f"{where}; each one's figure is {whose} over its span, so the total counts "
                "what they shared once per task (more than was used)"
            )
    return lines


@click.command()
@click.argument("files", nargs=-1, required=True, type=_FILES)
@click.option(
    "--by",
    "-b",
    default="label",
    show_default=True,
    help="Columns to group by, comma-separated: label, label_pattern, run, path, depth, or a "
    "key of the tasks' extra data (dataset, model, ...).",
)
@click.option(
    "--measure",
    "-m",
    "measure_text",
    default="duration,cpu_time,peak_memory,energy",
    show_default=True,
    help=f"Measures, comma-separated: {', '.join(MEASURES)}.",
)
@click.option(
    "--output",
    "-o",
    type=OutputPath(),
    help="Write the table (numbers in SI units) as .csv, .parquet or .tex instead of printing "
    "it, or as CSV to standard output with -; needs the pandas extra: "
    "pip install 'tasktrace[pandas]'.",
)
@_names_option
@carbon_intensity_option
@_table_force_option
@_paused_gc
def table(  # noqa: PLR0917 - click passes one parameter per option (by name)
    files: tuple[Path, ...],
    by: str,
    measure_text: str,
    output: Output | None,
    names: tuple[str, ...],
    carbon_intensity: float | None,
    force: bool,
) -> None:
    """Print the cost of FILES' tasks per group (default: per label), across runs.

    Each group: the task count, and per measure the total (the largest value for peaks) and
    the mean. A task inside another task of its group is counted in that one only. With a
    carbon intensity, emissions follow energy.

    Example: tasktrace table runs/*.json --by label --measure duration,cpu_time,energy
    """
    carbon = _carbon(carbon_intensity)
    try:
        measures = parse_measures(measure_text)
    except ValueError as e:
        raise click.UsageError(f"--measure: {e}") from None
    names_given = [m.name for m in measures]
    if "emissions" in names_given and not carbon:
        raise click.UsageError(
            "--measure emissions needs a carbon intensity "
            "(--carbon-intensity or the machine's setting)"
        )
    if carbon and "energy" in names_given and "emissions" not in names_given:
        measures.append(MEASURES["emissions"])
    columns = [c.strip() for c in by.split(",") if c.strip()]
    if output is not None:
        _check_output(output, force, files)
    rows = task_rows(_runs(files, names), carbon)
    try:
        groups = group_rows(rows, columns, measures)
    except ValueError as e:
        raise click.UsageError(f"--by: {e}") from None
    if output is None:
        console = output_console()
        console.print(_cost_table(groups, columns, measures))
        print_note(console, _overlap_note(groups, columns, measures))
        return
    with needs_extra("table -o"):  # pandas; pyarrow for .parquet, jinja2 for .tex
        from tasktrace.formats.frame import encode_table, frame  # noqa: PLC0415 - optional extra

        suffix = ".csv" if output.path is None else output.path.suffix.lower()  # -: CSV
        try:
            data = encode_table(frame(groups), suffix)
        except ValueError as e:
            raise Failure(f"{output}: {e}") from None
    output.write(data)
