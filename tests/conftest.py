"""Shared fixtures: one in-memory tracer provider for the whole session, errors re-raised."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace.core.settings import reset_settings
from tasktrace.core.warn import set_raise_errors
from tasktrace.testing import install_test_provider, task_spans

from .export_helpers import clean_env
from .otlp_receivers import otlp_grpc_receiver, otlp_http_receiver
from .suite_tmp import SUITE_TMP

__all__ = ["otlp_grpc_receiver", "otlp_http_receiver", "task_spans"]

# The checkout sits beside shared/ (in development and in CI alike).
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lenskit-2025.8"

install_test_provider()
set_raise_errors(True)  # internal errors fail the test that hit them
# The signal tests send SIGHUP to commands and to `tasktrace run`, and expect its default
# action. A suite started under `nohup` inherits SIGHUP ignored, and so would every command
# (`sh -c 'kill -HUP $$'` then exits 0, a `run` told SIGHUP runs on): start from the default.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the suite's temporary folder (:mod:`tests.suite_tmp`)."""
    del config
    shutil.rmtree(SUITE_TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts from default settings and no TASKTRACE_* or LK_* variable, in tmp_path."""
    for key in list(os.environ):
        if key.startswith(("TASKTRACE_", "LK_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def lenskit_fixtures() -> list[Path]:
    """Return the LensKit 2025.8 task files in shared/fixtures."""
    files = sorted(FIXTURES.glob("*.json"))
    assert files, f"no LensKit fixtures found in {FIXTURES}"
    return files


def load_json(path: Path) -> object:
    """Parse a JSON file."""
    return json.loads(path.read_text())


DEMO = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Task files of the demo (``examples/train_digits.py``) run with 5 and with 3 epochs."""
    folder = tmp_path_factory.mktemp("demo")
    runs = {}
    for epochs in (5, 3):
        path = folder / f"demo-{epochs}-epochs.json"
        subprocess.run(
            [sys.executable, str(DEMO), "--file", str(path), "--epochs", str(epochs)],
            check=True,
            capture_output=True,
            cwd=folder,
            env=clean_env(),
        )
        runs[epochs] = path
    return runs
