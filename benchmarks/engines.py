"""Engines: 500 calls of a 1 ms function through joblib, Ray and Dask, with tasktrace and without.

For each engine two driver processes run side by side (:mod:`benchmarks.engine_driver`), each
with its own two worker processes: one without tasktrace (never imported), one with the
integration set up, each call inside a ``Task`` and each round inside a ``Task`` whose finish
(waiting for the workers' records) is in the time. Rounds alternate between the two, and the
ratio is of the medians. joblib runs ``Parallel(n_jobs=2)`` with its automatic batching (loky),
Ray a local instance with two CPUs (``num_cpus=1`` per call; a third driver runs Ray with a
tracing hook that does nothing, to show the part of the traced figure that is Ray's own tracing
path, which the integration rides on), Dask a ``LocalCluster`` of two
single-threaded worker processes. Targets (issue 14): joblib and Dask at most 1.10×, Ray 1.20×.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import ROOT, Row

CALLS = 500
"""Calls per round."""
TARGETS = {"joblib": 1.10, "ray": 1.20, "dask": 1.10}
"""Largest ratio (with tasktrace / without) each engine may show."""
ROUNDS = 11
"""Rounds per engine, alternating between the two drivers; the ratio is of the medians (on a
shared 2-core machine single rounds vary by more than the targets' margins)."""


class _Driver:
    """A driver subprocess answering ``go`` with a round's wall seconds."""

    def __init__(self, engine: str, mode: str, n: int, folder: Path) -> None:
        env = dict(os.environ)
        paths = [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]  # this checkout's first
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        for name in [k for k in env if k.startswith("OTEL_")]:
            del env[name]  # no exporter: the cost measured is the integration's own
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.engine_driver", engine, mode, str(n), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self._expect("ready")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine driver ended (exit {self.proc.wait()})")
        return line.strip()

    def _expect(self, word: str) -> None:
        while self._line() != word:
            pass  # an engine's own output

    def round(self) -> float:
        """Run one round; return its wall seconds."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        while True:
            line = self._line()
            try:
                return float(line)
            except ValueError:
                continue  # an engine's own output

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(
    engine: str, n: int = CALLS, rounds: int = ROUNDS, modes: tuple[str, ...] = ("traced",)
) -> dict[str, tuple[float, float]]:
    """Return ``{mode: (median round seconds, paired ratio)}`` for ``plain`` and ``modes``.

    Every mode's driver runs next to the ``plain`` one (without tasktrace), rounds alternating
    (the order turned each round). ``paired`` is the median over the rounds of the mode's round
    seconds over the plain round's next to it (a burst of a noisy neighbour slows both of a
    pair, so it moves less between runs than the ratio of the medians, which the targets are
    judged on); ``1.0`` for ``plain``.
    """
    names = ("plain", *modes)
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as tmp:
        drivers: list[tuple[str, _Driver]] = []
        try:
            for name in names:
                (Path(tmp) / name).mkdir()
                drivers.append((name, _Driver(engine, name, n, Path(tmp) / name)))
            times: dict[str, list[float]] = {name: [] for name in names}
            for i in range(rounds):
                for name, driver in drivers if i % 2 == 0 else drivers[::-1]:
                    times[name].append(driver.round())
        finally:
            for _, driver in drivers:
                driver.close()
    plain = times["plain"]
    return {
        name: (
            statistics.median(times[name]),
            statistics.median(t / p for t, p in zip(times[name], plain, strict=True)),
        )
        for name in names
    }


def run(quick: bool = False, engines: list[str] | None = None) -> list[Row]:
    """Measure each engine, or those named; one row each (with tasktrace; reference: without).

    Raises:
        ValueError: A name in ``engines`` is not one of :data:`TARGETS` (the message lists them).
    """
    unknown = sorted(set(engines or ()) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}: choose from {sorted(TARGETS)}")
    rows = []
    for engine, target in TARGETS.items():
        if engines and engine not in engines:
            continue
        modes = ("hook", "traced") if engine == "ray" else ("traced",)
        figures = measure(engine, rounds=3 if quick else ROUNDS, modes=modes)
        without_s = figures["plain"][0]
        with_s, paired = figures["traced"]
        if engine == "ray":
            hook_s, hook_paired = figures["hook"]
            rows.append(
                Row(
                    "engines",
                    "ray: Ray's tracing hook alone (a hook that does nothing), no tasktrace",
                    hook_s,
                    "s",
                    reference=without_s,
                    target=f"Ray's share of the traced row (paired {hook_paired:.2f}×)",
                )
            )
        rows.append(
            Row(
                "engines",
                f"{engine}: {CALLS} × 1 ms calls, a Task in each (median round)",
                with_s,
                "s",
                reference=without_s,
                target=f"≤ {target:.2f}× (paired {paired:.2f}×)",
                met=with_s / without_s <= target,
            )
        )
    return rows


if __name__ == "__main__":  # python -m benchmarks.engines [--quick] [joblib|ray|dask ...]
    names = [a for a in sys.argv[1:] if not a.startswith("-")]
    for row in run("--quick" in sys.argv, names or None):
        print(
            f"{row.metric}: {row.value:.3f} s vs {row.reference:.3f} s = {row.ratio:.2f}×, "
            f"target {row.target}"
        )
