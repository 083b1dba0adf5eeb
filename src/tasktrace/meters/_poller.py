"""One shared background poller for counters that must be read between a task's start and finish.

Two kinds of energy source need reading more often than at task boundaries:

* counters that wrap (RAPL's ``energy_uj`` wraps at ``max_energy_range_uj``): reading them at
  least once per wrap period lets :class:`WrappingCounter` count every wrap, so a task that spans
  several wraps is still exact;
* power that is only available as an instantaneous reading (NVML on GPUs without the total
  energy counter): :class:`SampledEnergy` integrates it over time.

Both register a *channel* with the process's :class:`Poller`, a single daemon thread started
lazily when the first channel registers (never at import). Each channel has its own interval;
the thread sleeps until the next channel is due. After ``fork`` the child starts its own thread
again on demand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasktrace.meters._base import WarnOnce

__all__ = ["Poller", "SampledEnergy", "WrappingCounter", "get_poller"]

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
        self._lock = threading.Condition()
        self._channels: dict[str, _Channel] = {}
        self._thread: threading.Thread | None = None
        self._ticks = 0
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

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
            if not self.running:
                self._thread = threading.Thread(
                    target=self._run, name="tasktrace-poller", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

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

        A later :meth:`register` starts a new thread.
        """
        with self._lock:
            self._channels.clear()
            self._closed = True
            thread, self._thread = self._thread, None
            self._lock.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            self._closed = False

    def _call(self, key: str, channel: _Channel) -> None:
        try:
            channel.poll()
        except Exception as e:  # noqa: BLE001 - a broken channel must not stop the others
            _warn(f"poll:{key}", "tasktrace: poller channel %s failed (%r); still polled", key, e)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                if not self._channels:
                    self._lock.wait()
                    continue
                now = time.monotonic()
                next_due = min(c.due for c in self._channels.values())
                if next_due > now:
                    self._lock.wait(next_due - now)
                    continue
                due = [(k, c) for k, c in self._channels.items() if c.due <= now]
                for _, channel in due:
                    channel.due = now + channel.interval_s
            for key, channel in due:
                self._call(key, channel)
            with self._lock:
                self._ticks += 1
                self._lock.notify_all()

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the lock may have been held by it.
        self._lock = threading.Condition()
        self._thread = None
        if self._channels:
            self._thread = threading.Thread(target=self._run, name="tasktrace-poller", daemon=True)
            self._thread.start()


_poller = Poller()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_poller._after_fork_in_child)


def get_poller() -> Poller:
    """Return the process's shared :class:`Poller`."""
    return _poller


class WrappingCounter:
    """Extend a hardware counter that wraps at a known range into a monotonic value.

    Each :meth:`value` call reads the raw counter; a raw value lower than the previous one means
    the counter wrapped once, and ``range`` is added to the offset. The extension is exact as
    long as the counter is read at least once per wrap period, which the shared :class:`Poller`
    guarantees once :meth:`attach` has been called. Thread-safe.
    """

    def __init__(self, read_raw: Callable[[], int], range_: int, key: str) -> None:
        """Create a counter.

        Args:
            read_raw: Reads the current raw counter value (for RAPL: ``energy_uj``, µJ).
            range_: Value at which the counter wraps to 0 (for RAPL: ``max_energy_range_uj``).
            key: Name of the poller channel (the counter's file path, for example).

        Raises:
            OSError: The first read of ``read_raw`` failed.
        """
        self._read_raw = read_raw
        self.range = range_
        self.key = key
        self._lock = threading.Lock()
        self._last = read_raw()
        self._offset = 0
        self.wraps = 0
        """Number of wraps seen so far."""

    def value(self) -> int:
        """Read the counter and return ``wraps * range + raw`` (same unit as the raw counter).

        Raises:
            OSError: Reading the raw counter failed.
        """
        with self._lock:
            raw = self._read_raw()
            if raw < self._last:
                self._offset += self.range
                self.wraps += 1
            self._last = raw
            return self._offset + raw

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
