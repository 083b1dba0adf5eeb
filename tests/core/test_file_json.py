"""The task-file serialiser (core.file_json): the model's bytes, with no Python call per node."""

from __future__ import annotations

import contextlib
import datetime
import math
import sys
from pathlib import Path
from types import FrameType

from opentelemetry import trace

from tasktrace import Task
from tasktrace.core.record import dump_json


def _varied_tree() -> Task:
    """Return a finished tree with every kind of value a file holds.

    Set and unset rare fields, extra data (non-finite floats, nesting, a date), a failure, a
    user's span, non-ASCII text.
    """
    with Task("root ✓ 训练", tags=["a", "b"], epoch=3) as root:
        for i in range(5):
            with Task(f"task {i}"):
                pass
        with Task("measured") as measured:
            measured.loss = math.nan
            measured.grads = [math.inf, -math.inf, 1.5, {"deep": [None, True]}]
            measured.when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
            measured.children_cpu_time_s = 0.25
            measured.cpu_energy_source = "rapl"
            measured.cpu_energy_short_task = False
            measured.dram_energy_j = math.inf
        failing = Task("fails")
        with contextlib.suppress(ValueError), failing:
            raise ValueError(failing.label + ': bad "quoted" value\n')
        with trace.get_tracer("user").start_as_current_span("user span"), Task("under") as under:
            under.subprocess = True
            under.peak_gpu_memory_source = "torch"
    return root


def test_files_are_the_models_json(lenskit_fixtures: list[Path]) -> None:
    """A task file's bytes are ``model_dump_json``'s, for LensKit's files and tasktrace's trees.

    Running tasks too (a file written at a refresh), and a single node.
    """
    trees = [Task.model_validate_json(p.read_text()) for p in lenskit_fixtures]
    trees.append(_varied_tree())
    with Task("running") as running, Task("child"):
        trees.append(running)
        assert dump_json(running) == running.model_dump_json().encode()
    trees.append(Task("pending"))
    for tree in trees:
        data = dump_json(tree)
        assert data == tree.model_dump_json().encode(), tree.label


def test_a_subclass_with_its_own_field_keeps_it_in_the_file() -> None:
    """A user's subclass that adds a field (the model's polymorphic serialiser) writes it."""

    class EpochTask(Task):
        epoch_of_run: int = 0

    with Task("root") as root, EpochTask("sub", epoch_of_run=7):
        pass
    data = dump_json(root)
    assert data == root.model_dump_json().encode()
    assert b'"epoch_of_run":7' in data


def test_no_python_call_per_node() -> None:
    """Serialising a tree calls no Python function per node.

    (The model's own serialiser calls the enum's ``value`` property for each.) The number of
    calls does not grow with the tree.
    """

    def calls(tree: Task) -> int:
        count = 0

        def profile(frame: FrameType, event: str, arg: object) -> None:
            nonlocal count
            del frame, arg
            if event == "call":
                count += 1

        dump_json(tree)  # anything built at the first call is built
        sys.setprofile(profile)
        try:
            dump_json(tree)
        finally:
            sys.setprofile(None)
        return count

    with Task("small") as small, Task("task"):
        pass
    with Task("large") as large:
        for _ in range(200):
            with Task("task"):
                pass
    assert calls(large) == calls(small)
