"""``tasktrace compare``: which roots it pairs, unfinished tasks marked, large trees folded.

A ``tasktrace run`` of a script wraps the script's root task in the command's (``python
train.py 50`` above ``train rf``): compare paired that root with the direct run's ``train rf``
and never compared the two ``train rf`` trees. A run killed mid-way (its root ``running``) gave
a ratio of 3,716.9× with nothing saying the run had not finished. A comparison of 20,000 tasks
printed 60,068 table lines in 81 s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .cli_helpers import run_cli


def _task(label: str, duration: float, status: str = "finished", **fields: Any) -> dict[str, Any]:
    return {
        "label": label,
        "status": status,
        "duration": duration,
        "cpu_time": duration / 2,
        **fields,
    }


def _train(scale: float) -> dict[str, Any]:
    subtasks = [_task(f"fit {i}", 0.5 * scale) for i in range(3)]
    return _task("train rf", 2.0 * scale, subtasks=subtasks)


def _write(path: Path, tree: dict[str, Any]) -> str:
    path.write_text(json.dumps(tree))
    return str(path)


def _compare_json(tmp_path: Path, *files: str) -> dict[str, Any]:
    done = run_cli(["compare", "--json", *files], tmp_path)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_tasktrace_run_is_compared_from_the_task_with_the_other_roots_label(
    tmp_path: Path,
) -> None:
    """The direct run's ``train rf`` against the wrapped ``train rf``, both ways round."""
    direct = _write(tmp_path / "direct.json", _train(1.0))
    command = _task("python train.py", 5.0, children_cpu_time_s=1.0)
    command["subtasks"] = [{**_train(1.5), "subprocess": True}]
    wrapped = _write(tmp_path / "wrapped.json", command)
    for files, first in (((direct, wrapped), "direct"), ((wrapped, direct), "wrapped")):
        result = _compare_json(tmp_path, *files)
        assert result["roots"]["wrapped"] == ["python train.py", "train rf"]
        assert result["roots"]["direct"] == ["train rf"]
        by_label = {m["path"][-1]: m for m in result["matched"]}
        assert set(by_label) == {"train rf", "fit 0", "fit 1", "fit 2"}
        durations = by_label["fit 1"]["measures"]["duration_s"]["values"]
        assert durations == ([0.5, 0.75] if first == "direct" else [0.75, 0.5])
        assert result["unmatched"] == {"direct": [], "wrapped": []}
    done = run_cli(["compare", direct, wrapped], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrapped: compared from its task python train.py / train rf" in done.stdout


def test_roots_of_different_labels_show_both(tmp_path: Path) -> None:
    """Roots without a common label are still compared, each run's label on the row."""
    a = _write(tmp_path / "a.json", _task("baseline", 1.0))
    b = _write(tmp_path / "b.json", _task("candidate", 2.0))
    assert _compare_json(tmp_path, a, b)["matched"][0]["labels"] == ["baseline", "candidate"]
    done = run_cli(["compare", a, b], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "baseline (b: candidate)" in done.stdout


def test_an_unfinished_task_is_marked_beside_its_figures(tmp_path: Path) -> None:
    """A run saved while running: its figures say ``(running)``, with a note; JSON: complete."""
    killed = _write(tmp_path / "killed.json", _task("python long.py", 10.0, status="running"))
    done_run = _write(tmp_path / "long.json", _task("python long.py", 11.7))
    done = run_cli(["compare", killed, done_run], tmp_path)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "duration" in line)
    assert re.search(r"10\.00s \(running\)", row), row
    assert "had not finished" in done.stdout
    matched = _compare_json(tmp_path, killed, done_run)["matched"][0]
    assert matched["complete"] is False
    assert matched["statuses"] == ["running", "finished"]


def _epochs(epochs: int, batches: int) -> dict[str, Any]:
    return _task(
        "big",
        100.0,
        subtasks=[
            _task(f"epoch {e}", 1.0, subtasks=[_task(f"batch {b}", 0.001) for b in range(batches)])
            for e in range(epochs)
        ],
    )


def test_a_large_comparison_folds_repeated_siblings_and_its_json_lists_every_task(
    tmp_path: Path,
) -> None:
    """3 epochs × 400 batches: a folded row per level, sums per run; JSON: all 1,204 tasks."""
    path = _write(tmp_path / "big.json", _epochs(3, 400))
    done = run_cli(["compare", path, path, "-n", "a", "-n", "b"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) < 30, done.stdout
    batches = next(line for line in lines if "batch 0…399 (1,200 tasks)" in line)
    assert "1.20s" in batches  # the sum of 1,200 batches of 1 ms, in each run
    assert any("epoch 0…2 (3 tasks)" in line for line in lines)
    assert "1,204 matched tasks: repeated siblings folded" in done.stdout
    assert len(_compare_json(tmp_path, path, path)["matched"]) == 1 + 3 + 1200
    every = run_cli(["compare", "--all", path, path], tmp_path)
    assert every.returncode == 0, every.stderr
    assert sum("batch 399" in line for line in every.stdout.splitlines()) == 3


@pytest.mark.parametrize("order", [0, 1])
def test_unmatched_subtrees_are_listed_from_the_file_root(tmp_path: Path, order: int) -> None:
    """A subtree one run lacks is listed once, with its path from that run's root."""
    five = _write(tmp_path / "five.json", _epochs(5, 2))
    three = _write(tmp_path / "three.json", _epochs(3, 2))
    files = (five, three) if order == 0 else (three, five)
    result = _compare_json(tmp_path, *files)
    assert result["unmatched"]["five"] == [
        {"path": ["big", f"epoch {e}"], "subtasks": 2} for e in (3, 4)
    ]
    assert result["unmatched"]["three"] == []


def test_many_unmatched_repeated_siblings_are_listed_as_one_line_each_run(tmp_path: Path) -> None:
    """1,000 batches per epoch against 600: each epoch's batch 600…999 is one line."""
    many = _write(tmp_path / "many.json", _epochs(3, 1000))
    fewer = _write(tmp_path / "fewer.json", _epochs(3, 600))
    done = run_cli(["compare", many, fewer], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Only in many (1,200 unmatched):" in done.stdout
    lines = [line for line in done.stdout.splitlines() if "batch 600…999 (400 tasks)" in line]
    assert [line.strip() for line in lines] == [
        f"big / epoch {e} / batch 600…999 (400 tasks)" for e in range(3)
    ]
    assert len(_compare_json(tmp_path, many, fewer)["unmatched"]["many"]) == 1200
