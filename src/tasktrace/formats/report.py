"""One self-contained HTML report of one or more task files (plotly, its JavaScript embedded).

Per run, side by side: the run's facts (host, machine, start, status, exit code, which measures
were taken, what a missing one needs, and why each energy meter did or did not measure where
the file records it), an icicle of the task tree sized by a measure chosen
in the page, a timeline, and a per-label table (count, totals, means), sortable. With several
runs, a comparison table per label: each run's total, and the difference and ratio to the first.
In hover texts and tables, a figure that is or counts an energy of a task shorter than its
source's update period has ``≈`` before it (the facts say how many tasks), and a figure that was
not measured is ``—``, as in ``compare`` and ``table``.
Trees over :data:`tasktrace.core.views.AUTO_COLLAPSE_TASKS` tasks are drawn with repeated siblings
folded (see :mod:`tasktrace.formats.fold`).

Needs the ``report`` extra (plotly); ``import tasktrace`` never imports this module:
:func:`tasktrace.report` loads it on first use. The page needs no network and no server.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasktrace.core.lines import APPROXIMATE, NOT_MEASURED, OVERLAPPING
from tasktrace.core.units import friendly_ratio
from tasktrace.core.views import paused_gc
from tasktrace.formats.energy_note import MISSING_REASONS, recorded_meters, short_task_note
from tasktrace.formats.extras import missing_extra
from tasktrace.formats.figures import (
    LABEL_ROOM_PX,
    icicle_figure,
    table_figure,
    table_width_px,
    text_px,
    timeline_figure,
)
from tasktrace.formats.fold import fold_tree, hover_text, utc_text
from tasktrace.formats.measures import MEASURES, SHORT_TASK_FLAGS, CarbonIntensity, Measure
from tasktrace.formats.output import check_output, write_output
from tasktrace.formats.rows import Run, group_rows, load_runs, task_rows

try:
    import plotly
    from plotly.offline import get_plotlyjs
except ImportError as e:  # pragma: no cover - exercised in a subprocess without plotly
    raise missing_extra("plotly", "report", "tasktrace.report") from e

__all__ = ["build_report", "report"]

_SOURCES = {"cpu_energy_j": "cpu", "gpu_energy_j": "gpu", "system_energy_j": "system"}
_TABLE_MEASURES = ("duration", "cpu_time", "peak_memory", "energy", "emissions")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.runs { display: grid; gap: 1.5em; }
.run { min-width: 0; border-top: 3px solid #4c78a8; padding-top: 0.5em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.note { color: #555; font-size: 0.9em; }
.wide { overflow-x: auto; }
.failed { color: #d62728; font-weight: 600; } .cancelled { color: #c77700; font-weight: 600; }
"""


def _div(figure: Any, div_id: str) -> str:
    if figure is None:
        return '<p class="note">Nothing to draw: no task has this measure.</p>'
    text: str = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"responsive": True, "displaylogo": False},
    )
    tables = [t for t in figure.data if t.type == "table"]
    if tables:  # never narrower than its text: plotly cuts off what a column cannot hold
        table = tables[0]
        width = table_width_px(table.header.values, table.cells.values)
        text = f'<div class="wide"><div style="min-width: {width}px">{text}</div></div>'
    return text


def _facts(run: Run, rows: list[dict[str, Any]], nodes: int, carbon: CarbonIntensity) -> str:
    root = run.task
    items: list[tuple[str, str]] = [("file", html.escape(str(run.path)))]
    hosts = sorted({r["hostname"] for r in rows if r["hostname"]})
    machines = sorted({r["machine"] for r in rows if r["machine"]})
    items.append(("host", html.escape(", ".join(hosts)) or "unknown"))
    items.append(("machine", html.escape(", ".join(machines)) or "not set"))
    if root.start_time is not None:
        items.append(("start", utc_text(root.start_time)))
    status = f'<span class="{root.status.value}">{root.status.value}</span>'
    if root.error is not None:
        status += f" ({html.escape(root.error)})"
    items.append(("status", status))
    exit_code = (root.__pydantic_extra__ or {}).get("exit_code")
    if exit_code is not None:
        items.append(("exit code", html.escape(str(exit_code))))
    failed = sum(r["status"] == "failed" for r in rows)
    cancelled = sum(r["status"] == "cancelled" for r in rows)
    count = f"{len(rows):,}"
    if failed or cancelled:
        count += f' (<span class="failed">{failed:,} failed</span>, '
        count += f'<span class="cancelled">{cancelled:,} cancelled</span>)'
    if nodes < len(rows):
        count += f"; repeated siblings folded into {nodes:,} nodes"
    items.append(("tasks", count))
    measured, missing = [], []
    for measure in MEASURES.values():
        column = measure.column
        if column == "energy_j" or (column == "emissions_g" and not carbon):
            continue
        if any(r.get(column) is not None for r in rows):
            scope = _SOURCES.get(column)
            sources = sorted(
                {
                    f"{r[f'{scope}_energy_source']} ({r[f'{scope}_energy_scope']})"
                    for r in rows
                    if scope and r.get(f"{scope}_energy_source")
                }
            )
            measured.append(measure.title + (f" [{', '.join(sources)}]" if sources else ""))
        else:
            reason = MISSING_REASONS.get(column, "not in the file")
            missing.append(f"{measure.title}: {reason}")
    items.append(("measured", html.escape(", ".join(measured)) or "nothing"))
    if missing:
        reasons = "<br>".join(html.escape(m) for m in missing)
        items.append(("not measured", f'<span class="note">{reasons}</span>'))
    short = sum(
        any(r.get(flag) is True and r.get(c) is not None for c, flag in SHORT_TASK_FLAGS.items())
        for r in rows
    )
    if short:  # what the ≈ in the hover texts and tables means
        note = html.escape(short_task_note(short))
        items.append(("approximate", f'<span class="note">{note}</span>'))
    recorded = recorded_meters(root)
    if recorded:
        checks = [
            f"{name}: " + ("available" if c.available else f"not available: {c.reason}")
            for name, c in recorded.items()
        ]
        text = "<br>".join(html.escape(c) for c in checks)
        items.append(("meters", f'<span class="note">{text}</span>'))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="facts">{body}</dl>'


def _measures(carbon: CarbonIntensity) -> list[Measure]:
    return [MEASURES[n] for n in _TABLE_MEASURES if n != "emissions" or carbon]


def _cell(measure: Measure, group: dict[str, Any], key: str) -> str:
    """Format a group's figure (``key``), after ``≈`` where it counts an approximate value.

    Followed by ``‡`` where the group's tasks overlapped in one process or machine
    (:data:`~tasktrace.core.lines.OVERLAPPING`).
    """
    text = measure.cell(group.get(key), bool(group.get(f"{measure.column}_short_tasks")))
    return text + (OVERLAPPING if group.get(f"{measure.column}_overlapping_tasks") else "")


def _label_table(groups: list[dict[str, Any]], measures: Sequence[Measure]) -> Any:
    headers = ["label", "tasks", "failed"]
    cells: list[list[str]] = [
        [html.escape(g["label_pattern"]) for g in groups],
        [f"{g['tasks']:,}" for g in groups],
        [f"{g['failed']:,}" for g in groups],
    ]
    keys: dict[str, list[Any]] = {}
    for m in measures:
        total = f"{m.column}_{m.aggregate}"
        if all(g[total] is None for g in groups):
            continue
        headers.append(f"{m.aggregate} {m.title}")
        cells.append([_cell(m, g, total) for g in groups])
        if not m.peak:
            headers.append(f"mean {m.title}")
            cells.append([_cell(m, g, f"{m.column}_mean") for g in groups])
        keys[f"{m.aggregate} {m.title}"] = [g[total] for g in groups]
    keys["tasks"] = [g["tasks"] for g in groups]
    keys["label"] = [g["label_pattern"] for g in groups]
    return table_figure(
        "Per label (numbers in labels as #)",
        headers,
        cells,
        keys,
        # no cell wraps but a label longer than the label column's room (at its spaces)
        row_height_px=48 if any(text_px(c) > LABEL_ROOM_PX for c in cells[0]) else 26,
    )


def _comparison_table(
    names: Sequence[str], groups: Sequence[list[dict[str, Any]]], measures: Sequence[Measure]
) -> Any:
    by_run = [{g["label_pattern"]: g for g in run_groups} for run_groups in groups]
    labels = list(dict.fromkeys(k for run in by_run for k in run))
    headers = ["label", "measure", *names]
    for name in names[1:]:
        headers += [f"{name} − {names[0]}", f"{name} / {names[0]}"]
    cells: list[list[str]] = [[] for _ in headers]
    keys: dict[str, list[Any]] = {"label": [], f"ratio {names[-1]} / {names[0]}": []}
    for label in labels:
        for m in measures:
            column = f"{m.column}_{m.aggregate}"
            values = [run.get(label, {}).get(column) for run in by_run]
            if all(v is None for v in values):
                continue
            row = [html.escape(label), f"{m.aggregate} {m.title}"]
            row += [_cell(m, run.get(label, {}), column) for run in by_run]
            rough = [bool(run.get(label, {}).get(f"{m.column}_short_tasks")) for run in by_run]
            ratio = None
            for v, approximate in zip(values[1:], rough[1:], strict=True):
                known = v is not None and values[0] is not None
                diff = v - values[0] if known else None  # type: ignore[operator]
                ratio = v / values[0] if known and values[0] else None  # type: ignore[operator]
                mark = APPROXIMATE if approximate or rough[0] else ""
                row.append(m.signed_cell(diff, approximate or rough[0]))
                ratio_text = NOT_MEASURED if not known else ""  # "": the first run's figure is 0
                row.append(ratio_text if ratio is None else mark + friendly_ratio(ratio))
            for column_cells, text in zip(cells, row, strict=True):
                column_cells.append(text)
            keys["label"].append(label)
            keys[f"ratio {names[-1]} / {names[0]}"].append(ratio)
    return table_figure("Comparison per label (to the first run)", headers, cells, keys)


def build_report(runs: Sequence[Run], carbon: CarbonIntensity | None = None) -> str:
    """Build the report page for ``runs`` as one HTML document (plotly's JavaScript inline)."""
    carbon = carbon if carbon is not None else CarbonIntensity()
    measures = _measures(carbon)
    sections, groups = [], []
    for k, run in enumerate(runs):
        table = task_rows([run], carbon)
        rows = table.rows
        run_groups = group_rows(table, ("label_pattern",), measures)
        groups.append(run_groups)
        nodes = fold_tree(run.task, carbon)
        hover = [hover_text(n) for n in nodes]
        sections.append(
            f'<section class="run" id="run-{k}"><h2>{html.escape(run.name)}</h2>'
            f"{_facts(run, rows, len(nodes), carbon)}"
            f"{_div(icicle_figure(nodes, hover), f'icicle-{k}')}"
            f"{_div(timeline_figure(nodes, hover), f'timeline-{k}')}"
            f"{_div(_label_table(run_groups, measures), f'labels-{k}')}</section>"
        )
    comparison = ""
    if len(runs) > 1:
        figure = _comparison_table([r.name for r in runs], groups, measures)
        comparison = f"<section>{_div(figure, 'comparison')}</section>"  # ids: one element each
    title = "tasktrace report: " + ", ".join(r.name for r in runs)
    note = (
        "Click a task in the icicle to zoom in, the top bar to zoom out; hover for all its "
        "measures. Red: failed, orange: cancelled."
    )
    if any(k.endswith("_overlapping_tasks") and v for g in groups for r in g for k, v in r.items()):
        note += (
            f" {OVERLAPPING} after a total: some of the label's tasks ran at the same time in one "
            "process (CPU time) or on one machine (energy); each one's figure is its process's "
            "or machine's over its span, so the total counts what they shared once per task."
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # first: the mark that lets the next report replace this one (formats.output)
        f'<meta name="generator" content="tasktrace, plotly {plotly.__version__}">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">{note}</p>'
        f'<div class="runs" style="grid-template-columns: repeat({len(runs)}, minmax(0, 1fr))">'
        f"{''.join(sections)}</div>{comparison}</body></html>\n"
    )


def report(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an HTML report of one or more task files to ``output``; return its path.

    The file is self-contained (plotly's JavaScript embedded, about 5 MB) and opens offline.
    Task files written by tasktrace or LensKit, and OTLP JSON-lines files, are read as they are.

    Args:
        paths: One task file or a sequence of them (each a run, shown side by side).
        output: The HTML file to write (by atomic replacement).
        names: A name per run (default: the file names without ``.json``).
        carbon_intensity_g_per_kwh: One carbon intensity (g CO₂e per kWh) for every task;
            by default each task's machine's ``carbon_intensity_g_per_kwh`` setting, if any.
            Emissions are shown only where an intensity is known.
        overwrite: Replace ``output`` whatever it holds (default: only when it is empty or an
            earlier report tasktrace wrote: :func:`~tasktrace.formats.output.check_output`).

    Raises:
        FileExistsError: ``output`` exists, is not an earlier report and ``overwrite`` is false.
        FileNotFoundError: The folder of ``output`` does not exist.
        tasktrace.formats.rows.TaskFileError: A file cannot be read or is not a task file.
        ValueError: ``names`` does not fit ``paths``, or the intensity is negative.
        OSError: ``output`` cannot be written.
    """
    target = Path(output)
    check_output(target, overwrite)
    carbon = CarbonIntensity.from_settings(carbon_intensity_g_per_kwh)
    files = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    with paused_gc():  # a large tree: millions of objects, none in cycles (see paused_gc)
        runs = load_runs(files, names)
        page = build_report(runs, carbon)
    write_output(target, page.encode())
    return target
