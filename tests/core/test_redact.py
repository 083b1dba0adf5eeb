"""Secrets in a command line are redacted before it is recorded (core.redact)."""

from __future__ import annotations

import pytest

from tasktrace.core.redact import redact_argv


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
