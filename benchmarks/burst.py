"""Export burst: 10,000 tasks in a tight loop exported over OTLP/HTTP to a loopback receiver.

The workload runs in a fresh process configured only by ``OTEL_*`` variables (tasktrace owns
the provider, default settings); the receiver (the test suite's, decoding real protobuf) runs
here. Reports spans received vs sent and the time from the end of the loop to process exit
(the flush at exit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks._common import ROOT, Row, print_rows

_WORKLOAD = """
import sys, time
from tasktrace import Task
n = int(sys.argv[1])
for _ in range(n):
    with Task("burst"):
        pass
print(time.time(), flush=True)
"""


def run(quick: bool = False) -> list[Row]:
    """Run the burst and return the rows."""
    from tests.otlp_receivers import OtlpHttpReceiver

    n = 2000 if quick else 10000
    with OtlpHttpReceiver() as receiver:
        env = dict(os.environ)
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "burst",
                "PYTHONPATH": str(ROOT / "src"),
            }
        )
        proc = subprocess.run(
            [sys.executable, "-c", _WORKLOAD, str(n)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd=ROOT,
        )
        exited = time.time()
        loop_end = float(proc.stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 10
        while len(receiver.spans()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        received = len(receiver.spans())
    return [
        Row(
            "burst",
            f"spans received of {n:,} sent",
            received,
            "spans",
            n,
            "0 dropped",
            received == n,
        ),
        Row(
            "burst",
            "flush at exit (loop end → process exit)",
            exited - loop_end,
            "s",
            target="≤ 5 s",
            met=exited - loop_end <= 5,
        ),
    ]


if __name__ == "__main__":
    print_rows(run("--quick" in sys.argv))
