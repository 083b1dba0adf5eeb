"""A tree rebuilt from spans lists siblings in the order they started, as the task file does.

Spans are exported when they end, so an OTLP JSON-lines file of a live run holds siblings in
the order they *finished*. A task file lists subtasks in the order they started. ``show``,
``export --format task``, ``compare`` (which pairs same-labelled siblings in order) and the
report must see one order whichever file they read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from .cli_helpers import run_cli

_SCRIPT = textwrap.dedent(
    """
    import time
    from tasktrace import ContextThreadPoolExecutor, Task

    def fold(i):
        with Task("fold", fold=i):
            time.sleep(0.05 * (4 - i))  # the first started finishes last

    with Task("cv", file="cv.json"):
        with ContextThreadPoolExecutor(4) as pool:
            futures = []
            for i in range(4):
                futures.append(pool.submit(fold, i))
                time.sleep(0.01)  # started in order 0, 1, 2, 3
            for f in futures:
                f.result()
    """
)


def _folds(tree: dict[str, Any]) -> list[int]:
    return [t["fold"] for t in tree["subtasks"] if t["label"] == "fold"]


def test_siblings_rebuilt_from_spans_are_in_start_order(tmp_path: Path) -> None:
    """``show --json`` of the OTLP file and of the task file give the folds in one order."""
    (tmp_path / "cv.py").write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    env["TASKTRACE_OTLP_JSON_DIR"] = str(tmp_path / "spans")
    (tmp_path / "spans").mkdir()
    subprocess.run([sys.executable, "cv.py"], cwd=tmp_path, env=env, check=True, timeout=60)
    (spans,) = (tmp_path / "spans").iterdir()

    from_file = json.loads(run_cli(["show", "--json", "cv.json"], tmp_path).stdout)
    assert _folds(from_file) == [0, 1, 2, 3]  # the task file: in the order they started
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _folds(json.loads(shown.stdout)) == [0, 1, 2, 3]
    done = run_cli(["export", str(spans), "--format", "task", "-o", "rebuilt.json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _folds(json.loads((tmp_path / "rebuilt.json").read_text())) == [0, 1, 2, 3]
