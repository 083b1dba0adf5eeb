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
