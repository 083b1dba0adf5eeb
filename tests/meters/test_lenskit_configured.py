"""A program that configured LensKit itself: tasktrace uses LensKit's live settings, never re-read.

Runs in ``.venv-lenskit`` (LensKit 2025.8.1 with the CPU build of PyTorch; ``make
test-lenskit``), so the default suite deselects it (marker ``lenskit``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import EXPORTER_RATE_W, PROMETHEUS_JOB
from .energy_helpers import JoulesExporter, PrometheusServer
from .lenskit_project import clean_environment, run_task, write_project

pytestmark = pytest.mark.lenskit

LENSKIT_PYTHON = Path(__file__).resolve().parents[2] / ".venv-lenskit" / "bin" / "python"


@pytest.fixture
def lenskit_python() -> str:
    """Return the side environment's python, or fail saying how to make it."""
    if not LENSKIT_PYTHON.exists():
        pytest.fail(f"{LENSKIT_PYTHON} is missing: run `make test-lenskit`, which creates it")
    return str(LENSKIT_PYTHON)


@pytest.mark.slow
def test_configured_lenskit_in_the_working_folder_gives_energy(
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
    tmp_path: Path,
    lenskit_python: str,
) -> None:
    """lenskit.config.configure() then a task: system_power within 10% of the counter's truth."""
    server, exporter = prometheus_server
    write_project(tmp_path, PROMETHEUS_JOB, exporter.metric)
    prelude = "import lenskit.config\nlenskit.config.configure()"
    env = clean_environment(LK_PROMETHEUS__URL=server.url)
    fields = run_task(tmp_path, env, python=lenskit_python, prelude=prelude)
    duration = fields["duration"]
    assert isinstance(duration, float)
    assert fields["source"] == "prometheus", fields["stderr"]
    assert fields["system_power"] == pytest.approx(EXPORTER_RATE_W * duration, rel=0.10)
    assert fields["machine"] == PROMETHEUS_JOB


@pytest.mark.slow
def test_lenskits_own_folder_is_used_not_the_working_folder(
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
    tmp_path: Path,
    lenskit_python: str,
) -> None:
    """configure(cfg_dir=project): LensKit's settings win over other files in the working folder."""
    server, exporter = prometheus_server
    project = tmp_path / "project"
    write_project(project, PROMETHEUS_JOB, exporter.metric)
    (tmp_path / "lenskit.local.toml").write_text('machine = "not-this-one"\n')
    (tmp_path / "tasktrace.toml").write_text("[prometheus]\nscrape_interval_s = 1\n")
    prelude = (
        "from pathlib import Path\nimport lenskit.config\nlenskit.config.configure(Path('project'))"
    )
    env = clean_environment(LK_PROMETHEUS__URL=server.url)
    fields = run_task(tmp_path, env, python=lenskit_python, prelude=prelude)
    assert fields["machine"] == PROMETHEUS_JOB
    assert fields["source"] == "prometheus", fields["stderr"]
    duration = fields["duration"]
    assert isinstance(duration, float)
    assert fields["system_power"] == pytest.approx(EXPORTER_RATE_W * duration, rel=0.10)
