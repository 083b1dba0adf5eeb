"""Views of task trees: lines, collapsed siblings, totals, the notebook's HTML (core.views)."""

from __future__ import annotations

import gc
import html
import re
import weakref
from typing import Any

import tasktrace
from tasktrace.core.carbon import measure_values
from tasktrace.core.lines import memory_text
from tasktrace.core.units import friendly_bytes, friendly_duration
from tasktrace.core.views import count_tasks, label_pattern, label_totals, paused_gc
from tasktrace.formats.energy_note import energy_facts


def test_a_task_displays_as_its_tree_in_notebooks() -> None:
    """``Task._repr_html_``: the tree with human units, for finished and running tasks."""
    with tasktrace.Task("experiment") as root:
        with tasktrace.Task("epoch 1 <b>"):
            pass
        running_html = root._repr_html_()
    assert "experiment" in running_html
    assert "running" in running_html
    assert "epoch 1 &lt;b&gt;" in running_html  # labels are escaped, never markup
    done_html = root._repr_html_()
    assert "finished" in done_html
    assert friendly_duration(root.duration) in done_html
    assert done_html.startswith("<pre")


def test_the_notebook_view_never_breaks_a_line() -> None:
    """Each task is one line of the notebook's ``<pre>``, however long; the browser scrolls it.

    A fixed console width broke long lines mid-phrase (``CPU`` at one line's end, ``energy 113.5 J``
    at the next's start).
    """
    label = "a task label long enough that its line cannot fit in one hundred and twenty columns"
    with tasktrace.Task("experiment") as root:
        for i in range(3):
            with tasktrace.Task(f"{label} {i}"):
                sum(range(10_000))
    page = root._repr_html_()
    pre = re.search(r"<pre[^>]*>(.*)</pre>", page, re.S)
    assert pre is not None
    lines = html.unescape(re.sub(r"<[^>]+>", "", pre.group(1))).splitlines()
    assert len(lines) == 4, lines  # the root and its three subtasks, one line each
    for i, task in enumerate(root.subtasks):
        line = lines[i + 1]
        assert f"{label} {i}  finished  {friendly_duration(task.duration)}" in line, line
        assert line.rstrip().endswith(friendly_bytes(task.peak_memory)), line  # its last field
        assert len(line) > 120
    assert "overflow-x: auto" in pre.group(0)[: pre.group(0).index(">")]  # scrolls, never wraps


def _varied_tree() -> tasktrace.Task:
    """Build a tree with every case the totals and the energy note tell apart."""
    rapl_package = {"cpu_energy_source": "rapl", "cpu_energy_scope": "package"}
    return tasktrace.Task.model_validate(
        {
            "label": "run 7",  # a command under tasktrace run: its own CPU and peak RSS
            "status": "finished",
            "duration": 3.5,
            "cpu_time": 0.004,
            "peak_memory": 50_000_000,
            "children_cpu_time_s": 2.25,
            "children_peak_rss_bytes": 300_000_000,
            "subtasks": [
                {
                    "label": "epoch 1",
                    "status": "finished",
                    "duration": 1.25,
                    "cpu_time": 1.0,
                    "peak_memory": 120_000_000,
                    "cpu_power": 10.5,
                    "cpu_energy_short_task": True,
                    "dram_energy_j": 1.5,
                    **rapl_package,
                    "subtasks": [
                        {
                            "label": "worker 1",
                            "status": "finished",
                            "subprocess": True,
                            "cpu_time": 0.5,
                            "children_cpu_time_s": 0.125,
                            "subtasks": [{"label": "inner 1", "cpu_time": 0.2}],
                        },
                        {  # a subprocess whose CPU is unknown: nothing below it counts
                            "label": "worker 2",
                            "status": "failed",
                            "subprocess": True,
                            "subtasks": [{"label": "inner 2", "subprocess": True, "cpu_time": 0.3}],
                        },
                    ],
                },
                {"label": "epoch 2", "status": "failed", "peak_memory": 90_000_000},
                {
                    "label": "epoch 3",
                    "status": "finished",
                    "duration": 0.75,
                    "cpu_time": 0.7,
                    "cpu_power": 4.0,
                    "dram_energy_j": 0.5,
                    "cpu_energy_source": "rapl",
                    "cpu_energy_scope": "platform",
                },
                {
                    "label": "eval",
                    "status": "cancelled",
                    "duration": 0.1,
                    "gpu_power": 5.0,
                    "gpu_energy_source": "nvml-counter",
                    "gpu_energy_scope": "device",
                    "peak_gpu_memory": 2**30,
                    "peak_gpu_memory_source": "torch",
                },
                {  # the system energy alone (a Prometheus query)
                    "label": "serve",
                    "status": "finished",
                    "duration": 0.2,
                    "system_power": 50.0,
                    "system_energy_source": "prometheus",
                    "system_energy_scope": "query",
                    "system_energy_short_task": True,
                },
            ],
        }
    )


def _preorder(task: tasktrace.Task) -> list[tasktrace.Task]:
    nodes, stack = [], [task]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(reversed(node.subtasks))
    return nodes


def test_label_totals_sum_the_measures_each_task_line_shows() -> None:
    """``show --totals`` per pattern: the sums (in tree order) of every task's measure_values.

    label_totals reads the three measures it sums without building each task's dict of nine
    (a 100,000-task file); the figures must be measure_values', exactly.
    """
    root = _varied_tree()
    expected: dict[str, dict[str, Any]] = {}  # label_totals as it was: measure_values' dicts
    for node in _preorder(root):
        values = measure_values(node)
        pattern = label_pattern(node.label)
        row = expected.setdefault(
            pattern,
            {
                "pattern": pattern,
                "tasks": 0,
                "total_duration_s": None,
                "total_cpu_time_s": None,
                "max_peak_memory_bytes": None,
                "failed": 0,
            },
        )
        row["tasks"] += 1
        for column, total in (
            ("duration_s", "total_duration_s"),
            ("cpu_time_s", "total_cpu_time_s"),
        ):
            value = values[column]
            if value is not None:
                row[total] = (row[total] or 0.0) + value
        peak = values["peak_memory_bytes"]
        if peak is not None:
            row["max_peak_memory_bytes"] = max(row["max_peak_memory_bytes"] or 0, round(peak))
        row["failed"] += node.status is tasktrace.TaskStatus.FAILED
    assert label_totals(root) == list(expected.values())
    run = label_totals(root)[0]  # the command's own figures, not tasktrace's
    assert run["total_cpu_time_s"] == root.total_cpu()
    assert run["max_peak_memory_bytes"] == root.children_peak_rss_bytes


def test_a_command_smaller_than_tasktrace_has_no_peak_rss_in_totals_or_comparisons() -> None:
    """The high-water mark of tasktrace itself is never given as a run command's peak RSS.

    A command whose ``wait4`` peak is no larger than tasktrace's (``children_peak_rss_bytes``
    unknown) has its line name tasktrace's peak RSS as such, and no peak in the figures that
    ``show --totals``, ``table``, ``compare`` and ``report`` use. Seen failing: the totals gave
    tasktrace's 62 MiB as the command's "max peak RSS" (a tester's ``sh -c 'exit 3'``).
    """
    root = tasktrace.Task.model_validate(
        {
            "label": "sh -c",
            "status": "failed",
            "duration": 0.02,
            "cpu_time": 0.01,
            "peak_memory": 65_000_000,
            "children_cpu_time_s": 0.001,
        }
    )
    assert measure_values(root)["peak_memory_bytes"] is None
    assert label_totals(root)[0]["max_peak_memory_bytes"] is None
    assert f"tasktrace's peak RSS {friendly_bytes(65_000_000)}" in memory_text(root)


def test_energy_facts_and_task_counts_cover_every_task() -> None:
    """The energy note's counts, sources and ``≈`` tasks, and count_tasks, over the whole tree."""
    root = _varied_tree()
    nodes = _preorder(root)
    facts = energy_facts(root)
    assert facts.tasks == len(nodes) == count_tasks(root)
    assert count_tasks(root, 0) == 1
    assert count_tasks(root, 1) == 1 + len(root.subtasks)
    for scope in ("cpu", "gpu", "system"):
        assert facts.counts.get(scope, 0) == sum(
            getattr(n, f"{scope}_power") is not None for n in nodes
        )
    assert facts.counts.get("dram", 0) == sum(n.dram_energy_j is not None for n in nodes)
    assert facts.sources == {
        "cpu": ["rapl (package)", "rapl (platform)"],
        "gpu": ["nvml-counter (device)"],
        "system": ["prometheus (query)"],
        "dram": ["rapl (dram)"],
    }
    assert facts.meters == {"rapl", "nvml", "prometheus", "torch"}
    assert facts.short == 2  # epoch 1 (its RAPL CPU and DRAM) and serve (its system energy)


class _Node:
    """A tracked object that can be put in a cycle."""

    def __init__(self) -> None:
        self.other: object = None


def test_paused_gc_leaves_no_young_generation_to_walk() -> None:
    """After paused_gc, what the block made is in the oldest generation, still collectable.

    The youngest generation's next collection walked every object the block had made (0.2 s
    for a 100,000-task tree); a program's own frozen objects stay frozen.
    """
    gc.collect()
    with paused_gc():
        made = [_Node() for _ in range(1000)]
        made[0].other, made[1].other = made[1], made[0]  # a cycle, garbage once dropped
        assert not gc.isenabled()
    assert gc.isenabled()
    young = {id(o) for o in gc.get_objects(generation=0)}
    assert not any(id(o) in young for o in made)
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert all(id(o) in oldest for o in made)
    assert gc.get_freeze_count() == 0  # nothing left frozen: a full collection sees them
    cycle = weakref.ref(made[0])
    del made
    gc.collect()
    assert cycle() is None


def test_paused_gc_leaves_a_programs_frozen_objects_frozen() -> None:
    """A program that froze objects itself (before forking workers, say) keeps them frozen."""
    gc.collect()
    kept = [_Node() for _ in range(100)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        with paused_gc():
            made = [_Node() for _ in range(100)]
        del made
        assert gc.get_freeze_count() == frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()
