"""The first Python example of the README and of the getting-started page runs as written.

Pasted into a file and run, each writes ``runs/experiment.json`` with the tasks it shows. Seen
failing before their stand-ins for ``load`` and ``train`` were written in: ``NameError``, and a
task file recording ``failed``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .export_helpers import clean_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_first_python_example_runs_as_written(page: str, tmp_path: Path) -> None:
    """The example exits 0 and its task file holds the five tasks, all finished."""
    text = (ROOT / page).read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert found, f"no Python example in {page}"
    (tmp_path / "example.py").write_text(found.group(1), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    root = json.loads((tmp_path / "runs" / "experiment.json").read_text())
    assert root["label"] == "experiment"
    assert root["status"] == "finished"
    labels = [(t["label"], t["status"]) for t in root["subtasks"]]
    assert labels == [("load data", "finished")] + [(f"epoch {i}", "finished") for i in range(3)]
