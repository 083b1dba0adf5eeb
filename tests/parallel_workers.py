"""Worker functions for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

import os
import time

from tasktrace import Task


def busy_cpu(seconds: float) -> None:
    """Spin on the CPU for about ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def worker_tasks(parent: Task, worker: int, n_tasks: int, cpu_s: float) -> None:
    """One task per worker under ``parent``, holding ``n_tasks`` busy subtasks."""
    with Task(f"worker {worker}", parent=parent, worker=worker):
        for j in range(n_tasks):
            with Task(f"job {worker}.{j}"):
                busy_cpu(cpu_s)


def one_task(parent: Task, job: int, cpu_s: float) -> int:
    """Run a single busy task under ``parent``; return this process's id."""
    with Task(f"job {job}", parent=parent, job=job):
        busy_cpu(cpu_s)
    return os.getpid()


def flush_then_exit(parent: Task, endpoint: str) -> None:
    """In a forked child: export with a batch processor, run a task, end with ``os._exit``."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = trace.get_tracer_provider()
    provider.add_span_processor(  # type: ignore[attr-defined]
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=60_000)
    )
    with Task("forked child", parent=parent):
        busy_cpu(0.01)
    os._exit(0)
