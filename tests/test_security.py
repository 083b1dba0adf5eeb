"""Secrets never leave the process; task files get safe modes and a race-free temporary file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace import Task, _files
from tasktrace._redact import REDACTED, redact_argv
from tasktrace.cli import main

from .otlp_receivers import OtlpHttpReceiver

TOKEN = "S3CRET-otlp-token-7f1d"
ENV_SECRET = "S3CRET-env-value-a93c"
ARG_SECRET = "S3CRET-argv-value-55e0"
KV_SECRET = "S3CRET-kv-value-0b2d"

WORKLOAD = r"""
import logging, os, sys
logging.basicConfig(level=logging.DEBUG)
from tasktrace import Task
from tasktrace.cli import main
out = sys.argv[1]
with Task("job", file=out + "/job.json", tags=["a"]):
    with Task("step", epoch=1):
        pass
code = main(["run", "--record-argv", "-f", out + "/run.json", "--", sys.executable, "-c", "0",
             "--token", sys.argv[2], "API_KEY=" + sys.argv[3]])
print("run exit", code)
"""


def test_no_secret_reaches_spans_resource_files_or_logs(tmp_path: Path) -> None:
    """OTLP headers, env vars and argv secrets appear in no span, resource, file or log line."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    with OtlpHttpReceiver() as receiver:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {TOKEN}",
            OTEL_SERVICE_NAME="security-test",
            MY_SERVICE_PASSWORD=ENV_SECRET,
            TASKTRACE_REFRESH_INTERVAL_S="0.05",
        )
        done = subprocess.run(
            [sys.executable, str(script), str(out), ARG_SECRET, KV_SECRET],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.wait_for(3, timeout_s=10.0)
        headers = receiver.request_headers()
    assert any(TOKEN in str(h) for h in headers)  # the header was really in use
    assert "run exit 0" in done.stdout
    assert "DEBUG" in done.stderr  # debug logging was on
    texts = {
        "spans": repr([(s.name, s.attributes, s.events, s.status_message) for s in spans]),
        "resource": repr([s.resource_attributes for s in spans]),
        "stdout": done.stdout,
        "stderr": done.stderr,
    }
    texts.update({p.name: p.read_text() for p in out.iterdir()})
    assert set(texts) >= {"job.json", "run.json"}
    for where, text in texts.items():
        for secret in (TOKEN, ENV_SECRET, ARG_SECRET, KV_SECRET):
            assert secret not in text, f"{secret} leaked into {where}"
    run = json.loads((out / "run.json").read_text())
    assert run["argv"][-3:] == ["--token", REDACTED, f"API_KEY={REDACTED}"]


def test_run_records_argv_only_when_asked(tmp_path: Path) -> None:
    """`tasktrace run` keeps no argv by default, and its default label is redacted."""
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "--", "true", f"--password={ARG_SECRET}"]) == 0
    saved = json.loads(out.read_text())
    assert "argv" not in saved
    assert saved["label"] == f"true --password={REDACTED}"
    assert ARG_SECRET not in out.read_text()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["prog", "--password", "pw", "--epochs", "3"],
            ["prog", "--password", "***", "--epochs", "3"],
        ),
        (
            ["prog", "--api-key=abc", "--token-file", "t"],
            ["prog", "--api-key=***", "--token-file", "***"],
        ),
        (
            ["prog", "--client_secret", "x", "-p", "8"],
            ["prog", "--client_secret", "***", "-p", "8"],
        ),
        (
            ["env", "AWS_SECRET_ACCESS_KEY=x", "HOME=/h"],
            ["env", "AWS_SECRET_ACCESS_KEY=***", "HOME=/h"],
        ),
        (["--env", "--GITHUB_TOKEN=x"], ["--env", "--GITHUB_TOKEN=***"]),
        (["curl", "https://u:pw@host/p"], ["curl", "https://u:***@host/p"]),
        (["prog", "--author", "me", "input.csv"], ["prog", "--author", "me", "input.csv"]),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    """Values of secret-looking options, KEY=VALUE secrets and URL passwords are redacted."""
    assert redact_argv(argv) == expected


@pytest.fixture
def umask_of() -> Iterator[object]:
    """Run with a given umask (tasktrace reads it once per process: forget it around the test)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)
        _files._umask = None

    yield set_umask
    os.umask(old)
    _files._umask = None


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o000, 0o664)])
def test_task_file_mode_follows_umask_never_world_writable(
    tmp_path: Path, umask_of: object, mask: int, mode: int
) -> None:
    """Task files get 0o666 less the umask, and never world-write even with umask 0."""
    umask_of(mask)  # type: ignore[operator]
    path = tmp_path / "t.json"
    with Task("x", file=path):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_atomic_write_never_follows_planted_symlinks(tmp_path: Path) -> None:
    """Symlinks planted at the task file or at predictable temp names are never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "t.json"
    for name in ("t.json", ".t.json.tmp", "t.json.tmp", ".t.json.swp"):
        (tmp_path / name).symlink_to(victim)
    with Task("x", file=path):
        pass
    assert victim.read_text() == "precious"
    assert not path.is_symlink()
    assert Task.model_validate_json(path.read_text()).label == "x"
