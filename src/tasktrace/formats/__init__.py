"""Saved task trees in other formats: OTLP JSON lines, Chrome trace events, replay.

- :mod:`tasktrace.formats.otlp_json`: the OTLP JSON-lines file span exporter and reader.
- :mod:`tasktrace.formats.chrome_trace`: task trees as Chrome trace-event JSON (Perfetto).
- :mod:`tasktrace.formats.replay`: load a task file or an OTLP JSON-lines file, convert between
  them, and send either to an OTLP endpoint with the original ids and timestamps.
"""

from tasktrace.formats._convert import spans_to_task, task_to_spans

__all__ = ["spans_to_task", "task_to_spans"]
