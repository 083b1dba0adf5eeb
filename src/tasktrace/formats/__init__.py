"""Saved task trees in other formats: OTLP JSON lines, Chrome trace events, replay.

- :mod:`tasktrace.formats.otlp_json`: the OTLP JSON-lines file span exporter and reader.
- :mod:`tasktrace.formats.chrome_trace`: task trees as Chrome trace-event JSON (Perfetto).
- :mod:`tasktrace.formats.replay`: load a task file or an OTLP JSON-lines file, convert between
  them, and send either to an OTLP endpoint with the original ids and timestamps.
- :mod:`tasktrace.formats.measures`: the measures of a task in SI units, total energy,
  emissions from a carbon intensity.
- :mod:`tasktrace.formats.rows`: task files as runs and one row per task; cost per group.
- :mod:`tasktrace.formats.input_errors`: why an input file could not be read, in plain words.
- :mod:`tasktrace.formats.compare`: runs compared task by task, matched by path of labels.
- :mod:`tasktrace.formats.frame`: rows as a pandas DataFrame, tables as CSV/Parquet/LaTeX (the
  ``pandas`` extra).
- :mod:`tasktrace.formats.report`: the self-contained HTML report (the ``report`` extra).
"""

from tasktrace.formats.convert import spans_to_task, task_to_spans

__all__ = ["spans_to_task", "task_to_spans"]
