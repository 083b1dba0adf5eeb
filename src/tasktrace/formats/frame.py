"""Task files as pandas DataFrames, and cost tables written as CSV, Parquet or LaTeX.

Needs the ``pandas`` extra (``pip install 'tasktrace[pandas]'``: pandas, pyarrow for Parquet,
jinja2 for LaTeX); importing this module without pandas raises :class:`ImportError` naming it.
``import tasktrace`` never imports this module: :func:`tasktrace.read_tasks` loads it on first
use.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasktrace.core.lines import APPROXIMATE
from tasktrace.core.views import paused_gc
from tasktrace.formats.extras import missing_extra
from tasktrace.formats.measures import CarbonIntensity
from tasktrace.formats.output import LATEX_MARK
from tasktrace.formats.rows import load_runs, task_rows

try:
    import pandas as pd
except ImportError as e:  # pragma: no cover - exercised in a subprocess without pandas
    raise missing_extra("pandas", "pandas", "tasktrace.read_tasks") from e

__all__ = ["MEASURE_COLUMNS", "TABLE_FORMATS", "encode_table", "frame", "read_tasks"]

TABLE_FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".tex": "LaTeX"}
"""File suffixes that :func:`encode_table` writes, and the format each stands for."""

PathsLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _paths(paths: PathsLike) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


MEASURE_COLUMNS = frozenset(
    {
        "start_time_s",
        "finish_time_s",
        "duration_s",
        "cpu_time_s",
        "children_cpu_time_s",
        "peak_memory_bytes",
        "children_peak_rss_bytes",
        "peak_gpu_memory_bytes",
        "energy_j",
        "cpu_energy_j",
        "gpu_energy_j",
        "system_energy_j",
        "dram_energy_j",
        "emissions_g",
    }
)
"""The columns of :func:`read_tasks` that hold numbers whenever present: never an ``object``
column, so a measure no task took is NaN (a float column), as one some tasks took is."""


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Make a DataFrame of ``rows`` (columns in order of first appearance; missing: NaN).

    Each of :data:`MEASURE_COLUMNS` that pandas made an ``object`` column (every value
    ``None``: a measure not taken in any task) is made ``float64``, its values NaN.
    """
    table = pd.DataFrame.from_records(rows)
    for name in MEASURE_COLUMNS.intersection(table.columns):
        if table[name].dtype == object:
            table[name] = table[name].astype("float64")
    return table


def read_tasks(
    paths: PathsLike,
    *,
    names: Sequence[str] | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
) -> pd.DataFrame:
    """Read task files into a pandas DataFrame with one row per task.

    Task files written by tasktrace or LensKit, and OTLP JSON-lines files, are read as they
    are. The columns are those of :func:`tasktrace.formats.rows.task_rows`: ``run`` (the file
    name less ``.json``, or the entry of ``names``), ``file``, ``path`` (labels from the root
    joined by ``" / "``), ``depth`` (0: the root), ``label_pattern``, ``task_id``,
    ``parent_id`` (the parent's ``task_id``), ``label``, ``status``, the measures in SI units
    (``duration_s``, ``cpu_time_s``, ``peak_memory_bytes``, ``peak_gpu_memory_bytes``,
    ``cpu_energy_j``, ``gpu_energy_j``, ``system_energy_j``, ``dram_energy_j``, ``energy_j``;
    ``start_time_s`` and ``finish_time_s`` in UNIX seconds), ``emissions_g`` (g CO₂e) when an
    intensity is known, the other task fields, then the extra data (``tags``, ``epoch``, …).
    The measures are those ``tasktrace show`` prints: ``cpu_time_s`` is
    :meth:`~tasktrace.Task.total_cpu` (the task's process's CPU plus other processes' below
    it), and a ``tasktrace run`` command's ``peak_memory_bytes`` is the command's own.

    Args:
        paths: One path or a sequence of paths.
        names: A name per path for the ``run`` column (default: the file names).
        carbon_intensity_g_per_kwh: One carbon intensity for every task; by default each
            task's machine's ``carbon_intensity_g_per_kwh`` from the settings, if any.

    Returns:
        A DataFrame, one row per task, each run's tasks in tree order (pre-order).

    Raises:
        tasktrace.formats.rows.TaskFileError: A file cannot be read or is not a task file.
        ValueError: ``names`` does not fit ``paths``, or the intensity is negative.
    """
    carbon = CarbonIntensity.from_settings(carbon_intensity_g_per_kwh)
    with paused_gc():  # a large tree: millions of objects, none in cycles (see paused_gc)
        runs = load_runs(_paths(paths), names)
        return frame(task_rows(runs, carbon).rows)


_LATEX_FIGURE = "%.4g"
_SHORT_TASKS = "_short_tasks"


def _marked(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each figure that counts an approximate value as text after ``≈``.

    A group's ``<column>_short_tasks`` (:func:`~tasktrace.formats.rows.group_rows`) above 0
    marks its ``<column>_total`` and ``<column>_mean``; the count stays a column of its own.
    """
    out = table.copy()
    for name in table.columns:
        if not isinstance(name, str) or not name.endswith(_SHORT_TASKS):
            continue
        base = name.removesuffix(_SHORT_TASKS) + "_"
        rough = table[name].fillna(0) > 0
        if not rough.any():
            continue
        for column in table.columns:
            if column == name or not str(column).startswith(base) or "_" in column[len(base) :]:
                continue
            out[column] = [
                "" if pd.isna(v) else (APPROXIMATE if r else "") + _LATEX_FIGURE % v
                for v, r in zip(table[column], rough, strict=True)
            ]
    return out


def encode_table(table: pd.DataFrame, suffix: str) -> bytes:
    r"""Encode ``table`` as the format of a file suffix in :data:`TABLE_FORMATS`.

    CSV (UTF-8, no index column), Parquet (pyarrow) or a LaTeX ``tabular`` (pandas'
    ``to_latex``, which needs jinja2; text escaped for LaTeX: ``#`` becomes ``\\#``) after the
    comment line :data:`~tasktrace.formats.output.LATEX_MARK`; a figure whose group counts
    approximate values (``<column>_short_tasks`` above 0) is written after ``$\\approx$``,
    as are the ``≈`` of labels.

    Raises:
        ValueError: The suffix is not one of :data:`TABLE_FORMATS`.
        ImportError: pyarrow (Parquet) or jinja2 (LaTeX) is missing (names the extra).
    """
    if suffix == ".csv":
        return table.to_csv(index=False).encode()
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401, PLC0415 - only to name the extra when it is missing
        except ImportError as e:
            raise missing_extra("pyarrow", "pandas", "Parquet output") from e
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        return buffer.getvalue()
    if suffix == ".tex":
        try:
            import jinja2  # noqa: F401, PLC0415 - only to name the extra when it is missing
        except ImportError as e:
            raise missing_extra("jinja2", "pandas", "LaTeX output") from e
        latex = _marked(table).to_latex(
            index=False, float_format=_LATEX_FIGURE, na_rep="", escape=True
        )
        latex = latex.replace(APPROXIMATE, r"$\approx$")  # any TeX engine; a label's ≈ too
        return LATEX_MARK + b"\n" + latex.encode()  # the mark: replaceable by the next table
    raise ValueError(
        f"cannot write {suffix or 'a file without suffix'}: use one of {', '.join(TABLE_FORMATS)}"
    )
