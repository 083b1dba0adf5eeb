"""The shared background poller, wrap extension and sampled-power integration."""

from __future__ import annotations

import itertools
import logging
import threading

import pytest

from tasktrace.meters.poller import ExtendedCounter, Poller, SampledEnergy, plausible_wrap


def test_extended_counter_adds_one_range_per_plausible_wrap() -> None:
    """A step back that the elapsed time explains counts as one wrap of ``range``."""
    raws = iter([90, 10, 50, 5])
    now = [0.0]
    counter = ExtendedCounter(
        lambda: next(raws), 100, "c", units_per_j=1.0, max_power_w=100.0, clock=lambda: now[0]
    )
    now[0] = 1.0  # 20 units in 1 s at most 100 W: a wrap
    assert counter.reading() == (0, 110)
    now[0] = 2.0
    assert counter.value() == 150
    now[0] = 3.0
    assert counter.value() == 205
    assert counter.wraps == 2
    assert counter.glitches == 0


def test_extended_counter_step_back_no_wrap_explains_is_a_glitch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step back that would need more than the maximum power is a glitch, warned once."""
    raws = iter([500, 499, 600, 590])
    now = [0.0]
    counter = ExtendedCounter(
        lambda: next(raws), 1000, "c", units_per_j=1.0, max_power_w=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING):
        now[0] = 1.0  # a wrap would be 999 units in 1 s: more than 10 W
        assert counter.reading() == (1, 500)  # carries on from the last value
        now[0] = 2.0
        assert counter.reading() == (1, 601)
        now[0] = 3.0
        assert counter.reading() == (2, 601)
    assert counter.wraps == 0
    assert len([r for r in caplog.records if "stepped back" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("last", "raw", "elapsed_s", "rate", "wrap"),
    [
        (990, 10, 1.0, 100.0, True),  # 20 units in 1 s, at most 100 a second
        (990, 10, 0.1, 100.0, False),  # 20 units in 0.1 s would be 200 a second
        (500, 499, 1.0, 100.0, False),  # 999 units in 1 s: a glitch
        (500, 499, 10.0, 100.0, True),  # 999 units in 10 s: a wrap is possible
        (1200, 10, 1.0, 100.0, False),  # above the range: not this counter's wrap
    ],
)
def test_plausible_wrap_judges_by_elapsed_time_and_rate(
    last: int, raw: int, elapsed_s: float, rate: float, wrap: bool
) -> None:
    """A wrap is plausible only if the units it implies fit in the time at the maximum rate."""
    assert plausible_wrap(last, raw, 1000, elapsed_s, rate) is wrap


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
