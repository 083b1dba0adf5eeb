"""Secrets in a command line and in URLs are redacted before they are shown (core.redact)."""

from __future__ import annotations

import pytest

from tasktrace.core.redact import mask_url, redact_argv


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
        # A URL's query is assignments too: its secret-looking ones are redacted, the rest kept
        # (before: "https://h/x?token=t" was recorded whole, in the argv and the label).
        (
            ["curl", "https://u:pw@host/x?token=t&page=2"],
            ["curl", "https://u:***@host/x?token=***&page=2"],
        ),
        (
            ["wget", "--url=https://b.s3.amazonaws.com/d?X-Amz-Credential=c&X-Amz-Signature=s"],
            ["wget", "--url=https://b.s3.amazonaws.com/d?X-Amz-Credential=***&X-Amz-Signature=***"],
        ),
        (
            ["prog", "db.example.org/q?api_key=k;access_token=a#top"],
            ["prog", "db.example.org/q?api_key=***;access_token=***#top"],
        ),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    """Values of secret-looking options, KEY=VALUE secrets and URL passwords are redacted."""
    assert redact_argv(argv) == expected


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "http://user:pw@host:9090/p?token=abc&x=1#frag",
            "http://user:***@host:9090/p?token=***&x=***",
        ),
        ("https://collector.lab:4318", "https://collector.lab:4318"),
        ("http://alice@host:9090", "http://alice@host:9090"),
        ("http://u:p@[::1", "***"),
        # Not scheme://host: no netloc to find a password in (before: returned whole)
        ("http//alice:hunter2@prom:9090", "***"),
        ("prom.lab:9090/?token=abc", "***"),
        ("prom.lab:9090", "prom.lab:9090"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """A URL's password and query values become ***, the fragment goes; unparsable text too."""
    assert mask_url(url) == masked
