"""The plotly figures of a report: icicle, timeline and sortable tables.

Needs plotly (the ``report`` extra); importing this module without it raises
:class:`ImportError` naming the extra.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tasktrace.formats.extras import missing_extra
from tasktrace.formats.fold import MAIN_LANE, FoldNode
from tasktrace.formats.measures import MEASURES, Measure

try:
    import plotly.graph_objects as go
except ImportError as e:  # pragma: no cover - exercised in a subprocess without plotly
    raise missing_extra("plotly", "report", "tasktrace.report") from e

__all__ = [
    "AXIS_LABEL_CHARS",
    "ICICLE_MEASURES",
    "LABEL_ROOM_PX",
    "STATUS_COLOURS",
    "icicle_figure",
    "short_label",
    "table_figure",
    "table_width_px",
    "text_px",
    "timeline_figure",
]

ICICLE_MEASURES = (
    "duration",
    "cpu_time",
    "peak_memory",
    "energy",
    "cpu_energy",
    "gpu_energy",
    "system_energy",
    "emissions",
)
"""Measures the icicle can be sized by (those measured in the run are offered)."""
AXIS_LABEL_CHARS = 48
"""The most characters of a label drawn in a chart's own space (the timeline's axis, its legend,
the icicle's boxes and path bar); a longer one is cut with ``…`` there, and the hover shows it
in full. Plotly widens the timeline's margin to its widest tick label: a 5,000-character label
left the plot about 50 px wide."""


def short_label(text: str, limit: int = AXIS_LABEL_CHARS) -> str:
    """Return ``text``, or its first ``limit - 1`` characters and ``…`` where it is longer.

    For a chart's axis, legend or boxes (see :data:`AXIS_LABEL_CHARS`); pure, thread-safe.
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


STATUS_COLOURS = {
    "failed": "#d62728",
    "cancelled": "#ff9f1c",
    "running": "#17becf",
    "pending": "#9e9e9e",
}
"""Colours of tasks that did not finish normally (finished ones are blue by depth)."""
_DEPTH_BLUES = ("#3b6ea5", "#5b8cc0", "#7ea8d4", "#a3c2e3", "#c3d7ee")
_LANE_COLOURS = ("#4c78a8", "#54a24b", "#b279a2", "#9d755d", "#eeca3b", "#72b7b2", "#f58518")
_STATUS_ORDER = ("failed", "cancelled", "running", "pending")
_SIZE_SLACK = 1 + 1e-9  # a parent is drawn a hair wider than its children's sum (float sums)


def _status_colour(node: FoldNode) -> str | None:
    """Return the colour of the worst status among the tasks, ``None`` if all finished."""
    statuses = node.statuses
    return next((STATUS_COLOURS[s] for s in _STATUS_ORDER if statuses.get(s)), None)


def _colour(node: FoldNode) -> str:
    return _status_colour(node) or _DEPTH_BLUES[node.depth % len(_DEPTH_BLUES)]


def _sizes(nodes: Sequence[FoldNode], column: str) -> list[float]:
    """Icicle sizes for ``column``: each node at least its own value and its children's sum.

    Plotly's ``branchvalues="total"`` hides a node whose children add up to more than it,
    which parallel children (threads, workers) or peaks would otherwise do.
    """
    sizes = [float(n.values.get(column) or 0.0) for n in nodes]
    below = [0.0] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):  # pre-order: every child comes after its parent
        sizes[i] = max(sizes[i], below[i] * _SIZE_SLACK)
        parent = nodes[i].parent
        if parent is not None:
            below[parent] += sizes[i]
    return sizes


def _node_label(node: FoldNode) -> str:
    text = html.escape(short_label(node.title))  # cut before escaping: whole entities
    return f"{text} ×{len(node.tasks):,}" if node.folded else text


def icicle_figure(nodes: Sequence[FoldNode], hover: Sequence[str]) -> go.Figure | None:
    """Build an icicle of the tree, sized by a measure chosen with buttons.

    Returns ``None`` when there is nothing to size by (no duration, CPU, memory or energy).
    """
    choices: list[tuple[Measure, list[float]]] = []
    for name in ICICLE_MEASURES:
        measure = MEASURES[name]
        sizes = _sizes(nodes, measure.column)
        if sizes and sizes[0] > 0:
            choices.append((measure, sizes))
    if not choices:
        return None
    first, first_sizes = choices[0]
    figure = go.Figure(
        go.Icicle(
            ids=[str(i) for i in range(len(nodes))],
            labels=[_node_label(n) for n in nodes],
            parents=["" if n.parent is None else str(n.parent) for n in nodes],
            values=first_sizes,
            branchvalues="total",
            customdata=list(hover),
            hovertemplate="%{customdata}<extra></extra>",
            texttemplate="%{label}",
            marker={"colors": [_colour(n) for n in nodes]},
            root={"color": "white"},
            tiling={"orientation": "v"},
            sort=False,  # tree order (start order), not largest first
        )
    )
    buttons = [
        {
            "label": m.title,
            "method": "update",
            "args": [{"values": [sizes]}, {"title.text": f"Tasks sized by {m.title}"}],
        }
        for m, sizes in choices
    ]
    figure.update_layout(
        # the title at the top of the figure, the buttons below it: plotly puts a title in the
        # top margin's middle, where the buttons (anchored to the plot's top) covered it
        title={
            "text": f"Tasks sized by {first.title}",
            "x": 0,
            "xref": "paper",
            "xanchor": "left",
            "y": 1,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 12},
        },
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "x": 0,
                "xanchor": "left",
                "y": 1.0,
                "yanchor": "bottom",
                "pad": {"b": 8},
            }
        ],
        margin={"t": 90, "l": 10, "r": 10, "b": 10},
        height=max(360, 60 * (1 + max(n.depth for n in nodes)) + 120),
    )
    return figure


def timeline_figure(nodes: Sequence[FoldNode], hover: Sequence[str]) -> go.Figure | None:
    """Build a Gantt chart: one row per node, by start and finish.

    One colour (and legend entry) per process lane; failed and cancelled tasks are outlined in
    their status colour. Returns ``None`` when no task has a start time.
    """
    starts = [n.start_s for n in nodes if n.start_s is not None]
    if not starts:
        return None
    t0 = min(starts)
    lanes: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        if node.start_s is not None:
            lanes.setdefault(node.lane, []).append(i)
    figure = go.Figure()
    for k, (lane, rows) in enumerate(lanes.items()):
        outline = [_status_colour(nodes[i]) or "rgba(0,0,0,0)" for i in rows]
        figure.add_trace(
            go.Bar(
                orientation="h",
                name=html.escape(short_label(lane)),  # the hover has the task's label
                y=rows,
                base=[(nodes[i].start_s or t0) - t0 for i in rows],
                x=[
                    max(
                        0.0,
                        (nodes[i].finish_s or nodes[i].start_s or t0) - (nodes[i].start_s or t0),
                    )
                    for i in rows
                ],
                customdata=[hover[i] for i in rows],
                hovertemplate="%{customdata}<extra></extra>",
                marker={
                    "color": _LANE_COLOURS[k % len(_LANE_COLOURS)],
                    "line": {"color": outline, "width": 3},
                },
                showlegend=len(lanes) > 1 or lane != MAIN_LANE,
            )
        )
    figure.update_layout(
        title={"text": "Timeline (seconds since the first start)"},
        barmode="overlay",
        yaxis={
            "tickvals": list(range(len(nodes))),
            "ticktext": ["\u00a0\u00a0" * n.depth + _node_label(n) for n in nodes],
            "autorange": "reversed",
            "automargin": True,
        },
        xaxis={"title": {"text": "seconds"}, "rangemode": "tozero"},
        height=140 + 22 * len(nodes),
        margin={"t": 60, "r": 10, "b": 40},
        legend={"orientation": "h", "y": -0.05},
    )
    return figure


CHAR_PX = 7.7
"""The width of most characters of a table's 12 px text, in pixels: digits, most letters, ``µ``,
``−`` (plotly's font is Open Sans, else Verdana, Arial or the browser's sans-serif; digits are
7.64 px in DejaVu Sans, Chromium's sans-serif on Debian, and as wide in Verdana)."""
NARROW_PX = 5.0
"""The width of the narrow characters (:data:`_NARROW`: ``.``, ``i``, ``l``, ``t``, a space, …)."""
WIDE_PX = 12.0
"""The width of the wide characters (:data:`_WIDE`: ``m``, ``W``, ``+``, ``−``, ``×``, ``%``, …;
11.9 px and less in DejaVu Sans, whose ``+``, ``−`` and ``×`` are 10.05 px)."""
BOLD = 1.1
"""How much wider the bold header text is (``mean``: 37.0 px bold, 34.4 px estimated plain)."""
_NARROW = frozenset(".,:;'!|()[]ijlrtfI ")
_WIDE = frozenset("mwMW+−×=<>~#%&@")
_MARGINS_PX = 20
"""The table figure's left and right margins together (``margin`` in :func:`table_figure`)."""
_GAP_PX = 2
"""Room to spare in a column beyond its text and the padding on both sides (plotly wraps a
cell's text where it is wider than the column less both paddings)."""
CELL_PAD_PX = 8
"""Plotly's padding of a table cell's text (``cellPad``), on each side, in pixels."""
LABEL_ROOM_PX = 130.0
"""The label column's room for a label's text, in pixels: longer labels wrap at their spaces."""
LONGEST_WORD_PX = 300.0
"""A word wider than this (a path without spaces) does not widen its column further."""
_TAG = re.compile(r"<[^>]*>")


def text_px(text: str, *, bold: bool = False) -> float:
    """Return an upper estimate of ``text``'s width in a table, in pixels (pure, thread-safe).

    Per character: :data:`NARROW_PX`, :data:`WIDE_PX` or :data:`CHAR_PX`, times :data:`BOLD`
    for header text. Tags are left out and entities decoded (``&amp;`` is one ``&``).
    """
    plain = html.unescape(_TAG.sub("", text))
    width = sum(NARROW_PX if c in _NARROW else WIDE_PX if c in _WIDE else CHAR_PX for c in plain)
    return width * BOLD if bold else width


def _widest_word_px(text: str, *, bold: bool = False) -> float:
    words = html.unescape(_TAG.sub("", text)).split()
    return max((min(text_px(w, bold=bold), LONGEST_WORD_PX) for w in words), default=0.0)


def _column_widths_px(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> list[float]:
    """Return the width each column needs so that no text is cut off, in pixels.

    Plotly wraps a cell's text at spaces and clips what is still wider than its column. The
    first column (labels) gets :data:`LABEL_ROOM_PX` (less where its labels are shorter) and
    room for its widest word; the others, for their widest cell on one line (a number and its
    unit) and the widest word of their header.
    """
    widths = []
    for k, (header, column) in enumerate(zip(headers, cells, strict=True)):
        needed = max((_widest_word_px(c) for c in column), default=0.0)
        longest = max((text_px(c) for c in column), default=0.0)
        needed = max(needed, min(longest, LABEL_ROOM_PX) if k == 0 else longest)
        needed = max(needed, _widest_word_px(header, bold=True))
        widths.append(needed + 2 * CELL_PAD_PX + _GAP_PX)
    return widths


def table_width_px(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> int:
    """Return the narrowest width, in pixels, at which :func:`table_figure` cuts off no text.

    Plotly draws a table as wide as its ``<div>`` and clips each column's text at its edge; a
    number (``205ms``) cannot wrap, so in a column too narrow its first digits were lost. The
    report gives each table's ``<div>`` this as its minimum width (scrolling sideways where the
    page is narrower). Arguments as :func:`table_figure`'s; pure, thread-safe.
    """
    return round(sum(_column_widths_px(headers, cells))) + _MARGINS_PX


def table_figure(
    title: str,
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    sort_keys: Mapping[str, Sequence[Any]],
    row_height_px: int = 26,
) -> go.Figure:
    """Build a table with a "sort by" menu: one entry per key in ``sort_keys``.

    Args:
        title: The figure's title.
        headers: Column titles.
        cells: The columns of display text (each as long as the others).
        sort_keys: Menu label → one key per row; rows are sorted by it, largest first (text
            keys: alphabetically), rows without a key (``None``) last.
        row_height_px: The height a row is given in the figure's height (more where narrow
            columns wrap text); the table scrolls beyond 800 px.

    Each column's share of the width is what its text needs; below
    :func:`table_width_px` pixels in all, text is cut off.
    """
    count = len(cells[0]) if cells else 0

    def order(keys: Sequence[Any]) -> list[int]:
        known = [i for i in range(count) if keys[i] is not None]
        missing = [i for i in range(count) if keys[i] is None]
        numeric = all(isinstance(keys[i], int | float) for i in known)
        sort_key: Callable[[int], Any] = lambda i: keys[i]  # noqa: E731 - one-line key
        return sorted(known, key=sort_key, reverse=numeric) + missing

    orders = {label: order(keys) for label, keys in sort_keys.items()}
    first = next(iter(orders.values()), list(range(count)))

    def columns(rows: list[int]) -> list[list[str]]:
        return [[column[i] for i in rows] for column in cells]

    figure = go.Figure(
        go.Table(
            header={
                "values": [f"<b>{html.escape(h)}</b>" for h in headers],
                "align": "left",
                "fill": {"color": "#dde6f0"},
            },
            cells={"values": columns(first), "align": ["left"] + ["right"] * (len(headers) - 1)},
            columnwidth=_column_widths_px(headers, cells),  # relative: as the texts need
        )
    )
    buttons = [
        {
            "label": f"sort by {label}",
            "method": "restyle",
            "args": [{"cells.values": [columns(rows)]}],
        }
        for label, rows in orders.items()
    ]
    figure.update_layout(
        title={"text": title},
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "x": 1,
                "xanchor": "right",
                "y": 1.0,
                "yanchor": "bottom",
                "pad": {"b": 10},
            }
        ]
        if buttons
        else [],
        height=min(800, 130 + row_height_px * count),
        margin={"t": 80, "l": _MARGINS_PX // 2, "r": _MARGINS_PX // 2, "b": 10},
    )
    return figure
