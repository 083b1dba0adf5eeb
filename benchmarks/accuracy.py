"""Accuracy: tasktrace's figures against independent measurements of the same work.

- CPU time of a busy loop vs ``os.times()`` (user + system) around it;
- duration vs ``time.perf_counter()`` around the ``with`` block;
- nested peak RSS vs baseline RSS + the bytes actually allocated (and written).

Each as a relative error; targets within 5%.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks._common import Row, print_rows

MB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(quick: bool = False) -> list[Row]:
    """Measure and return the rows (in this process: nothing else runs here)."""
    from tasktrace import Task

    busy_s = 0.3 if quick else 1.0
    with Task("warm-up"):  # the first task sets tracing up; keep that out of the comparison
        pass
    t0 = os.times()
    p0 = time.perf_counter()
    with Task("busy") as busy:
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
    p1 = time.perf_counter()
    t1 = os.times()
    cpu_ref = (t1.user - t0.user) + (t1.system - t0.system)
    assert busy.cpu_time is not None
    assert busy.duration is not None
    rows = [
        Row(
            "accuracy",
            "CPU time vs os.times()",
            busy.cpu_time,
            "s",
            cpu_ref,
            "within 5%",
            abs(busy.cpu_time / cpu_ref - 1) <= 0.05,
        ),
        Row(
            "accuracy",
            "duration vs perf_counter()",
            busy.duration,
            "s",
            p1 - p0,
            "within 5%",
            abs(busy.duration / (p1 - p0) - 1) <= 0.05,
        ),
    ]
    if sys.platform.startswith("linux"):
        with Task("outer"):
            baseline = _rss_bytes()
            with Task("inner", reset_hwm=True) as inner:
                block = bytearray(b"\x01") * (200 * MB)
                del block
        expected = baseline + 200 * MB
        assert inner.peak_memory is not None
        rows.append(
            Row(
                "accuracy",
                "nested peak RSS vs baseline + 200 MiB allocated",
                inner.peak_memory / MB,
                "MiB",
                expected / MB,
                "within 5%",
                abs(inner.peak_memory / expected - 1) <= 0.05,
            )
        )
    return rows


if __name__ == "__main__":
    print_rows(run("--quick" in sys.argv))
