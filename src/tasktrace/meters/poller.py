"""One shared background poller for counters that must be read between a task's start and finish.

Two kinds of energy source need reading more often than at task boundaries:

* counters that wrap (RAPL's ``energy_uj`` wraps at ``max_energy_range_uj``): reading them at
  least once per wrap period lets :class:`ExtendedCounter` count every wrap, so a task that spans
  several wraps is still exact, and tell a wrap from a glitch or reset (:func:`plausible_wrap`);
  NVML's energy counter is read too, so that a reset between a task's start and end is seen;
* power that is only available as an instantaneous reading (NVML on GPUs without the total
  energy counter): :class:`SampledEnergy` integrates it over time.

Both register a *channel* with the process's :class:`Poller`, a single daemon thread started
lazily when the first channel registers (never at import). Each channel has its own interval;
the thread sleeps until the next channel is due. After ``fork`` the child starts its own thread
again on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce
from tasktrace.core.worker_thread import WorkerThread

__all__ = ["ExtendedCounter", "Poller", "SampledEnergy", "get_poller", "plausible_wrap"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


@dataclass
class _Channel:
    poll: Callable[[], object]
    interval_s: float
    due: float


class Poller:
    """Call registered functions periodically from one daemon thread.

    Thread-safe. The thread starts on the first :meth:`register` and never blocks interpreter
    exit (it is a daemon). A channel function that raises is logged once (per channel) and kept:
    a transient read error must not stop wrap tracking.
    """

    def __init__(self) -> None:
        """Create a poller with no channels and no thread (the thread starts on demand)."""
        self._channels: dict[str, _Channel] = {}
        self._ticks = 0
        self._worker = WorkerThread(
            "tasktrace-poller",
            self._take_due,
            self._poll_due,
            idle_s=self._until_due,
            after_fork=self._restart_after_fork,
        )

    @property
    def _lock(self) -> threading.Condition:
        """Guards the channels and ticks; the thread's condition (fresh in a forked child)."""
        return self._worker.cond

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._worker.running

    @property
    def ticks(self) -> int:
        """Number of polling rounds run so far by the thread (for tests and diagnostics)."""
        return self._ticks

    def register(self, key: str, poll: Callable[[], object], interval_s: float) -> None:
        """Call ``poll()`` every ``interval_s`` seconds, starting the thread if needed.

        Registering an existing ``key`` again replaces its function and interval.

        Args:
            key: Unique name of the channel (for example the sysfs path of a RAPL zone).
            poll: Function called without arguments from the poller thread.
            interval_s: Seconds between calls; must be positive.

        Raises:
            ValueError: ``interval_s`` is not positive.
        """
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        with self._lock:
            self._channels[key] = _Channel(poll, interval_s, time.monotonic() + interval_s)
            self._worker.notify()  # the thread recomputes its wait; started by the first channel

    def unregister(self, key: str) -> None:
        """Stop calling the channel ``key`` (no error if it is not registered)."""
        with self._lock:
            self._channels.pop(key, None)
            self._lock.notify_all()

    def registered(self, key: str) -> bool:
        """Return whether a channel named ``key`` is registered."""
        with self._lock:
            return key in self._channels

    def poll_now(self) -> None:
        """Call every channel once, in the calling thread (for tests and explicit refreshes)."""
        with self._lock:
            channels = list(self._channels.items())
        for key, channel in channels:
            self._call(key, channel)

    def wait_ticks(self, count: int, timeout_s: float) -> bool:
        """Block until the thread has run ``count`` more rounds; return whether it did in time."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._ticks + count
            while self._ticks < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self) -> None:
        """Remove every channel and stop the thread (for tests; the shared poller is never closed).

        Waits at most 5 seconds for a round in progress. A later :meth:`register` starts a new
        thread.
        """
        with self._lock:
            self._channels.clear()
        self._worker.stop(5)

    def _call(self, key: str, channel: _Channel) -> None:
        try:
            channel.poll()
        except Exception as e:  # noqa: BLE001 - a broken channel must not stop the others
            _warn(f"poll:{key}", "tasktrace: poller channel %s failed (%r); still polled", key, e)

    def _take_due(self) -> list[tuple[str, _Channel]] | None:
        """Return the channels due now, each next due an interval on, or ``None`` (lock held)."""
        now = time.monotonic()
        due = [(k, c) for k, c in self._channels.items() if c.due <= now]
        for _, channel in due:
            channel.due = now + channel.interval_s
        return due or None

    def _until_due(self) -> float | None:
        """Seconds until the next channel is due (under the lock); ``None`` with none."""
        if not self._channels:
            return None
        return max(0.0, min(c.due for c in self._channels.values()) - time.monotonic())

    def _poll_due(self, due: list[tuple[str, _Channel]]) -> None:
        """One round, in the thread: call each due channel, then count the round."""
        for key, channel in due:
            self._call(key, channel)
        with self._lock:
            self._ticks += 1
            self._lock.notify_all()

    def _restart_after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; start one if channels need it."""
        with self._lock:
            if self._channels:
                self._worker.notify()


_poller = Poller()


def get_poller() -> Poller:
    """Return the process's shared :class:`Poller`."""
    return _poller


def plausible_wrap(
    last: int, raw: int, range_: int, elapsed_s: float, max_rate_per_s: float
) -> bool:
    """Return whether a counter that went from ``last`` down to ``raw`` plausibly wrapped once.

    A wrap means the counter climbed from ``last`` to ``range_`` and on from 0 to ``raw``: it
    counted ``range_ - last + raw`` units in ``elapsed_s`` seconds. That is plausible only if it
    is at most ``max_rate_per_s * elapsed_s`` (a generous maximum power, in counter units per
    second). Any other step back is a glitch or a reset, not a wrap: a RAPL ``energy_uj`` that
    steps back by 1 mJ mid-range would otherwise count as a whole range (262,143 J).

    Args:
        last: Previous raw reading (counter units, for example µJ).
        raw: Current raw reading, lower than ``last``.
        range_: Value at which the counter wraps to 0 (RAPL's ``max_energy_range_uj``).
        elapsed_s: Seconds between the two readings (monotonic clock).
        max_rate_per_s: Largest plausible rate of the counter, in units per second.

    Returns:
        ``True`` for a plausible single wrap, ``False`` for a glitch or reset.
    """
    if not 0 <= raw < last <= range_:
        return False
    return range_ - last + raw <= max_rate_per_s * max(elapsed_s, 0.0)


class ExtendedCounter:
    """A hardware energy counter made monotonic: wraps are counted, glitches are detected.

    Each reading compares the raw counter with the previous one. A step back that a wrap can
    explain (:func:`plausible_wrap`: the counter could have reached ``range`` since the last
    reading at ``max_power_w``) adds ``range`` to the offset; any other step back (a firmware
    glitch, a counter reset) is a *glitch*: :attr:`glitches` grows by one, the extended value
    carries on from where it was, and one warning is logged (per counter). A task whose start
    and end readings have different :attr:`glitches` counts cannot know its energy: its value
    is ``None``. Counting wraps is exact as long as the counter is read at least once per wrap
    period, which the shared :class:`Poller` guarantees once :meth:`attach` has been called.
    Thread-safe.
    """

    def __init__(
        self,
        read_raw: Callable[[], int],
        range_: int,
        key: str,
        *,
        units_per_j: float,
        max_power_w: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a counter.

        Args:
            read_raw: Reads the current raw counter value (RAPL: ``energy_uj``, µJ; NVML:
                ``nvmlDeviceGetTotalEnergyConsumption``, mJ).
            range_: Value at which the counter wraps to 0 (RAPL: ``max_energy_range_uj``;
                NVML's 64-bit counter: ``2**64``, so a step back is never a wrap).
            key: Name of the poller channel (the counter's file path, for example).
            units_per_j: Counter units per joule (1e6 for µJ, 1e3 for mJ).
            max_power_w: A generous upper bound of the power the counter measures, in watts.
            clock: Monotonic clock in seconds (a parameter for tests).

        Raises:
            Exception: Whatever the first ``read_raw`` call raises (``OSError``, an NVML error).
        """
        self._read_raw = read_raw
        self.range = range_
        self.key = key
        self.units_per_j = units_per_j
        self.max_power_w = max_power_w
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._last = read_raw()
        self._last_s = clock()
        self._offset = 0
        self.wraps = 0
        """Number of wraps counted so far."""
        self.glitches = 0
        """Number of steps back that no wrap explains (glitches, resets) seen so far."""

    def reading(self) -> tuple[int, int]:
        """Read the counter; return ``(glitches, extended value)`` taken together.

        The extended value is in the raw counter's unit; differences between two readings with
        the same ``glitches`` are exact energy.

        Raises:
            Exception: Reading the raw counter failed (``OSError``, an NVML error).
        """
        with self._lock:
            raw = self._read_raw()
            now_s = self._clock()
            last, elapsed_s = self._last, now_s - self._last_s
            if raw < last:
                rate = self.max_power_w * self.units_per_j
                if plausible_wrap(last, raw, self.range, elapsed_s, rate):
                    self._offset += self.range
                    self.wraps += 1
                else:
                    self._offset += last - raw  # carry on from the last extended value
                    self.glitches += 1
                    _warn(
                        f"glitch:{self.key}",
                        "tasktrace: energy counter %s stepped back from %d to %d in %.3f s, "
                        "which no wrap at %d explains (it would take more than %g W); energy "
                        "of the tasks spanning it is None",
                        self.key,
                        last,
                        raw,
                        elapsed_s,
                        self.range,
                        self.max_power_w,
                    )
            self._last, self._last_s = raw, now_s
            return self.glitches, self._offset + raw

    def value(self) -> int:
        """Read the counter and return the extended value only (see :meth:`reading`)."""
        return self.reading()[1]

    def attach(self, poller: Poller, interval_s: float) -> None:
        """Have ``poller`` read this counter every ``interval_s`` seconds (replacing ``key``)."""
        poller.register(self.key, self.value, interval_s)


class SampledEnergy:
    """Integrate sampled power into energy (trapezoid rule), for meters without an energy counter.

    Each :meth:`value` call samples the power and adds ``(p_prev + p_now) / 2 * dt`` to the total.
    Resolution is the sampling interval: power changes between samples are not seen. Thread-safe.
    """

    def __init__(
        self,
        read_power_w: Callable[[], float],
        key: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an integrator.

        Args:
            read_power_w: Reads the instantaneous power in watts.
            key: Name of the poller channel.
            clock: Monotonic clock in seconds (a parameter for tests).

        Raises:
            Exception: Whatever the first ``read_power_w`` call raises.
        """
        self._read_power_w = read_power_w
        self._clock = clock
        self.key = key
        self._lock = threading.Lock()
        self._last_power_w = read_power_w()
        self._last_time_s = clock()
        self._energy_j = 0.0

    def value(self) -> float:
        """Sample the power and return the energy integrated so far, in joules."""
        with self._lock:
            power_w = self._read_power_w()
            now_s = self._clock()
            self._energy_j += (self._last_power_w + power_w) / 2 * (now_s - self._last_time_s)
            self._last_power_w = power_w
            self._last_time_s = now_s
            return self._energy_j

    def attach(self, poller: Poller, interval_s: float) -> None:
        """Have ``poller`` sample the power every ``interval_s`` seconds (replacing ``key``)."""
        poller.register(self.key, self.value, interval_s)
