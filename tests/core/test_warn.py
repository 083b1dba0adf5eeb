"""Warn once per kind; re-raise internal errors under a test suite (core.warn)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tasktrace.core.record import TaskRecord
from tasktrace.core.warn import WarnOnce, raise_errors, reset_warnings, set_raise_errors
from tasktrace.tree.processor import tree


def test_each_key_warns_once_until_reset(caplog: pytest.LogCaptureFixture) -> None:
    """A key warns the first time only; reset_warnings lets every warner warn again."""
    warn = WarnOnce(logging.getLogger("tasktrace.test"))
    with caplog.at_level(logging.WARNING, logger="tasktrace.test"):
        assert warn("a", "first %s", 1)
        assert not warn("a", "again %s", 2)
        assert warn("b", "other")
        reset_warnings()
        assert warn("a", "after reset")
    assert [r.getMessage() for r in caplog.records] == ["first 1", "other", "after reset"]


@pytest.fixture
def _failing_source() -> Iterator[None]:
    """Register a record source of the tree that raises, for one test."""

    def pull(finished: TaskRecord | None) -> None:
        del finished
        raise OSError("the record source broke")

    unregister = tree.register_record_source(pull)
    yield
    unregister()


@pytest.mark.usefixtures("_failing_source")
def test_internal_errors_raise_under_tests_and_warn_once_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the switch on (the suite's), an internal error raises; off, it is warned once."""
    assert raise_errors()  # tests/conftest.py turns it on
    with pytest.raises(OSError, match="broke"):
        tree.pull_records()
    set_raise_errors(False)
    try:
        with caplog.at_level(logging.WARNING):
            tree.pull_records()
            tree.pull_records()
    finally:
        set_raise_errors(True)
    warnings = [r.getMessage() for r in caplog.records if "record source" in r.getMessage()]
    assert len(warnings) == 1
    assert "the record source broke" in warnings[0]
