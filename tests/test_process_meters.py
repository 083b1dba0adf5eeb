"""Process meters: CPU time, and peak RSS with nested high-water-mark resets."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tasktrace import Task
from tasktrace.meters.process import HighWaterMarks, rss_marks

MB = 1024 * 1024
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the RSS high-water mark resets only on Linux"
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _touch(n_bytes: int) -> bytearray:
    """Allocate and write ``n_bytes`` so that every page is resident."""
    return bytearray(b"\x01") * n_bytes


@linux_only
def test_sibling_peak_is_its_own_and_parent_keeps_child_peak() -> None:
    """A 300 MB child, then a 50 MB sibling with reset_hwm: each peak is its own, parent ≥ both."""
    with Task("parent") as parent:
        with Task("big", reset_hwm=True) as big:
            block = _touch(300 * MB)
            del block
        baseline = _rss_bytes()
        with Task("small", reset_hwm=True) as small:
            block = _touch(50 * MB)
            del block
    assert big.peak_memory is not None
    assert small.peak_memory is not None
    assert parent.peak_memory is not None
    expected = baseline + 50 * MB
    assert abs(small.peak_memory - expected) <= 0.10 * expected, (small.peak_memory, expected)
    assert big.peak_memory >= baseline + 300 * MB * 0.95
    assert parent.peak_memory >= big.peak_memory


@linux_only
def test_top_level_task_resets_by_default() -> None:
    """A task without a parent resets the mark: an earlier peak does not leak into it."""
    block = _touch(200 * MB)
    del block
    with Task("after") as t:
        pass
    assert t.peak_memory is not None
    assert t.peak_memory < _rss_bytes() + 100 * MB


def test_subtask_does_not_reset_by_default() -> None:
    """A subtask does not reset the mark unless asked: its parent's earlier peak shows in it."""
    with Task("parent"):
        block = _touch(120 * MB)
        del block
        with Task("child") as child:
            pass
    assert child.peak_memory is not None
    assert child.peak_memory >= 120 * MB


def test_cpu_time_counts_busy_work_not_sleep() -> None:
    """cpu_time counts a busy loop and not a sleep; duration counts both."""
    with Task("busy") as busy:
        start = time.process_time()  # loop on CPU time: a loaded machine stretches wall time
        while time.process_time() - start < 0.2:
            pass
        used = time.process_time() - start
    with Task("sleepy") as sleepy:
        time.sleep(0.2)
    assert busy.cpu_time is not None
    assert sleepy.cpu_time is not None
    assert busy.cpu_time == pytest.approx(used, rel=0.05, abs=0.01)
    assert sleepy.cpu_time < 0.05
    assert sleepy.duration is not None
    assert sleepy.duration >= 0.2


def test_high_water_marks_fold_into_open_scopes() -> None:
    """A reset folds the current mark into every open scope first (the stack discipline)."""
    mark = {"value": 100}
    marks = HighWaterMarks(lambda: mark["value"], lambda: mark.update(value=10) or True, "test")
    outer = marks.open(reset=True)
    mark["value"] = 500
    inner = marks.open(reset=True)  # folds 500 into outer, resets to 10
    mark["value"] = 200
    assert marks.peak(inner, close=True) == 200
    assert marks.peak(outer, close=True) == 500


def test_unreadable_mark_gives_none() -> None:
    """A mark that cannot be read gives None, never 0."""
    marks = HighWaterMarks(lambda: None, lambda: False, "test")
    scope = marks.open(reset=True)
    assert marks.peak(scope, close=True) is None


def test_rss_marks_use_rusage_consistently() -> None:
    """The fast getrusage path agrees with /proc's VmHWM on this machine after a reset."""
    with Task("check", reset_hwm=True):
        pass
    if sys.platform.startswith("linux"):
        assert rss_marks.use_rusage


@linux_only
def test_spawned_worker_reports_its_own_peak_not_its_parents() -> None:
    """A spawn worker of a big parent: its task's peak is its own, not the parent's peak."""
    import multiprocessing

    big = _touch(400 * MB)  # resident while the worker starts: its ru_maxrss would include it
    with Task("root") as root, multiprocessing.get_context("spawn").Pool(1) as pool:
        del big
        peak = pool.apply(_worker_peak, (root,))
    assert peak is not None
    assert peak < 300 * MB, peak


def _worker_peak(parent: Task) -> int | None:
    with Task("job", parent=parent) as job:
        block = _touch(20 * MB)
        del block
    return job.peak_memory


@linux_only
def test_spawned_worker_peaks_above_and_below_its_parents_are_its_own() -> None:
    """A spawn worker's peaks are its own, whether above its parent's peak or below it."""
    import multiprocessing

    big = _touch(150 * MB)  # resident while the worker starts: its ru_maxrss includes it
    with Task("root") as root, multiprocessing.get_context("spawn").Pool(1) as pool:
        del big
        high, low = pool.apply(_worker_peaks, (root,))
    assert high is not None
    assert low is not None
    assert high >= 300 * MB, high  # above the parent's peak: the worker's own mark
    assert low < 200 * MB, low  # after a reset, below the parent's peak: its own again


def _worker_peaks(parent: Task) -> tuple[int | None, int | None]:
    with Task("high", parent=parent, reset_hwm=True) as high:
        block = _touch(300 * MB)
        del block
    with Task("low", parent=parent, reset_hwm=True) as low:
        block = _touch(10 * MB)
        del block
    return high.peak_memory, low.peak_memory


@linux_only
def test_a_worker_task_under_a_parent_elsewhere_resets_the_mark_by_default() -> None:
    """A pool worker's task (its parent in the driver) measures its own peak, not the worker's.

    The seed resets the high-water mark for a task without a parent; a parent in another
    process is none here: without the reset, a small task after a big job in the same worker
    reported the worker's lifetime peak.
    """
    import multiprocessing

    with Task("root") as root, multiprocessing.get_context("spawn").Pool(1) as pool:
        big = pool.apply(_worker_job, (root, 300 * MB))
        small = pool.apply(_worker_job, (root, 10 * MB))
    assert big is not None
    assert small is not None
    assert big >= 300 * MB, big
    assert small < 200 * MB, small


def _worker_job(parent: Task, n_bytes: int) -> int | None:
    with Task("job", parent=parent) as job:
        block = _touch(n_bytes)
        del block
    return job.peak_memory
