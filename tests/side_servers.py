"""Start a third-party trace backend (Phoenix, MLflow) from its side environment, on loopback.

Each backend is large and pins its own libraries, so it lives in its own virtual environment
(``.venv-phoenix``, ``.venv-mlflow``, made by ``make test-phoenix`` / ``make test-mlflow``),
never in the project's ``.venv``. :func:`serve` runs its server as a subprocess, waits until
its health URL answers, and stops it afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
"""The checkout's root folder (where the side environments are)."""

START_TIMEOUT_S = 120.0
"""How long a backend may take to answer its health URL (both import a lot on 2 loaded cores)."""


def get_json(url: str, timeout_s: float = 10.0) -> object:
    """GET ``url`` (a loopback http URL) and decode its JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback http
        return json.load(response)


@contextmanager
def serve(
    argv: Sequence[str], env: dict[str, str], health_url: str, folder: Path
) -> Iterator[None]:
    """Run ``argv`` with ``env`` (output to ``folder/server.log``) until ``health_url`` answers.

    Fails the test (with the server's log) if the server exits or does not answer within
    :data:`START_TIMEOUT_S`. On exit, terminates the server (kills it after 15 s).
    """
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(list(argv), env=env, stdout=log, stderr=log, cwd=folder)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    urllib.request.urlopen(health_url, timeout=2.0).close()  # noqa: S310
                    break
                except (urllib.error.URLError, OSError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{argv[0]} did not start: {log_path.read_text()}")
                    time.sleep(0.5)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
