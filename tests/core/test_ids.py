"""Task ids and random bits from tasktrace's private generator (core.ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasktrace import Task


def test_task_ids_ignore_the_programs_random_seed() -> None:
    """A program's random.seed() (every seeded experiment) never makes task ids repeat."""
    import random

    random.seed(42)
    first = Task("a").task_id
    random.seed(42)
    second = Task("a").task_id
    assert first != second
    assert first.version == 4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_draws_its_own_task_ids(tmp_path: Path) -> None:
    """A forked child does not repeat the ids its parent draws next."""
    import os

    out = tmp_path / "child_id"
    pid = os.fork()
    if pid == 0:  # the child
        try:
            out.write_text(str(Task("child").task_id))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert out.read_text() != str(Task("parent").task_id)


def test_task_ids_of_a_series_are_distinct_version_4_uuids_with_their_own_text() -> None:
    """100,000 task ids of one process: all distinct, version 4, RFC 4122; task_id_text is str()."""
    import uuid

    from tasktrace.core.ids import new_task_id, task_id_text

    ids = [new_task_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert {(i.version, i.variant) for i in ids} == {(4, uuid.RFC_4122)}
    assert all(task_id_text(i) == str(i) for i in ids[:1000])
    assert all(uuid.UUID(task_id_text(i)) == i for i in ids[:1000])
    # Neighbours do not look alike: the counter is scrambled in the last 12 hex digits.
    assert len({str(i)[-12:-8] for i in ids[:100]}) > 50
    foreign = uuid.uuid4()  # not of this series (a file's, another process's)
    assert task_id_text(foreign) == str(foreign)
