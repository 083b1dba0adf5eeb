"""The shared background poller, wrap extension and sampled-power integration."""

from __future__ import annotations

import itertools
import logging
import threading

import pytest

from tasktrace.meters._poller import Poller, SampledEnergy, WrappingCounter


def test_wrapping_counter_adds_one_range_per_wrap() -> None:
    """A raw value lower than the previous one counts as one wrap of ``range``."""
    raws = iter([90, 10, 50, 5])
    counter = WrappingCounter(lambda: next(raws), 100, "c")
    assert counter.value() == 110
    assert counter.value() == 150
    assert counter.value() == 205
    assert counter.wraps == 2


def test_poller_starts_no_thread_until_a_channel_registers(poller: Poller) -> None:
    """The thread is lazy: created by the first register, not by the poller itself."""
    assert not poller.running
    poller.register("c", lambda: None, 3600)
    assert poller.running
    poller.close()
    assert not poller.running


def test_poller_thread_calls_channels_repeatedly(poller: Poller) -> None:
    """A registered channel is called by the daemon thread at its interval."""
    calls = itertools.count()
    seen = []
    poller.register("c", lambda: seen.append(next(calls)), 0.005)
    assert poller.wait_ticks(3, timeout_s=5)
    assert len(seen) >= 3
    assert all(t.daemon for t in threading.enumerate() if t.name == "tasktrace-poller")


def test_poller_keeps_a_failing_channel_and_warns_once(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel that raises is reported once and still polled (transient errors recover)."""
    calls = []

    def flaky() -> None:
        calls.append(1)
        raise OSError("transient")

    poller.register("flaky", flaky, 3600)
    with caplog.at_level(logging.WARNING):
        poller.poll_now()
        poller.poll_now()
    assert len(calls) == 2
    assert poller.registered("flaky")
    assert len([r for r in caplog.records if "flaky" in r.getMessage()]) == 1


def test_poller_rejects_non_positive_interval(poller: Poller) -> None:
    """An interval of 0 would spin the thread; it is refused."""
    with pytest.raises(ValueError, match="interval_s"):
        poller.register("c", lambda: None, 0)


def test_sampled_energy_integrates_power_with_the_trapezoid_rule() -> None:
    """Energy is the mean of consecutive power samples times the time between them."""
    now = [0.0]
    power = [100.0]
    sampled = SampledEnergy(lambda: power[0], "p", clock=lambda: now[0])
    now[0], power[0] = 2.0, 100.0
    assert sampled.value() == pytest.approx(200.0)
    now[0], power[0] = 3.0, 300.0
    assert sampled.value() == pytest.approx(200.0 + (100.0 + 300.0) / 2 * 1.0)
