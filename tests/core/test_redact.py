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
        # A name ending in file/path/dir gives where a secret is, a path: kept, as --key-file
        # (before: --token-file's path was hidden and --key-file's kept)
        (
            ["prog", "--api-key=abc", "--token-file", "t"],
            ["prog", "--api-key=***", "--token-file", "t"],
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
        # A persona's command (before: only the first two pairs... none of these were hidden):
        # header values, curl's user:password, short and joined secret names, mysql's -pPW.
        (
            ["curl", "-H", "Authorization: Bearer A1", "-u", "user:A2", "--pass", "B8"],
            ["curl", "-H", "Authorization: ***", "-u", "user:***", "--pass", "***"],
        ),
        (
            ["p", "--key", "C4", "--access-key", "B2", "--wandb-key=A6", "mysql", "-pA8", "db"],
            ["p", "--key", "***", "--access-key", "***", "--wandb-key=***", "mysql", "-p***", "db"],
        ),
        (
            ["p", "-HX-Api-Key:k", "--header=Cookie: s=1", "X-Auth-Token: t", "--apiKey", "k"],
            [
                "p",
                "-HX-Api-Key:***",
                "--header=Cookie: ***",
                "X-Auth-Token: ***",
                "--apiKey",
                "***",
            ],
        ),
        (
            [
                "p",
                "-ualice:pw",
                "--proxy-user",
                "bob:pw",
                "--user=c:pw",
                "-token",
                "t",
                "--db-pw",
                "x",
            ],
            [
                "p",
                "-ualice:***",
                "--proxy-user",
                "bob:***",
                "--user=c:***",
                "-token",
                "***",
                "--db-pw",
                "***",
            ],
        ),
        (
            [
                "java",
                "-Dssl.keyStorePassword=pw",
                "openssl",
                "-passin",
                "pass:pw",
                "--basic-auth",
                "a",
            ],
            [
                "java",
                "-Dssl.keyStorePassword=***",
                "openssl",
                "-passin",
                "pass:***",
                "--basic-auth",
                "***",
            ],
        ),
        (
            ["sshpass", "-p", "pw", "ssh", "-p", "22", "h"],
            ["sshpass", "-p", "***", "ssh", "-p", "22", "h"],
        ),
        (["redis-cli", "-apw", "ping"], ["redis-cli", "-a***", "ping"]),
        (
            ["sh", "-c", "mysql -pPW db && curl -H 'Authorization: Basic QQ' x"],
            ["sh", "-c", "mysql -p*** db && curl -H 'Authorization: ***' x"],
        ),
        # Request bodies: a form's and a JSON object's secret-named fields
        (
            ["curl", "-d", "user=a&password=b&client_secret=c", "--data=x=1&api_key=k", "u"],
            ["curl", "-d", "user=a&password=***&client_secret=***", "--data=x=1&api_key=***", "u"],
        ),
        (
            ["curl", "--json", '{"user": "a", "password": "b", "auth": {"token": "t"}}'],
            ["curl", "--json", '{"user": "a", "password": "***", "auth": "***"}'],
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


@pytest.mark.parametrize(
    "argv",
    [
        ["prog", "--keyword", "k", "--key-column", "id", "--keys", "a,b", "--key-file", "f.pem"],
        ["prog", "--tokenizer", "bert", "--max-tokens", "100", "--max_new_tokens", "5"],
        ["prog", "--author", "me", "--auth-type", "basic", "--pass-through", "x", "--passes", "3"],
        ["psql", "-p", "5432", "-U", "bob", "db"],  # psql's -p is a port, -U a bare user name
        ["ssh", "-p", "22", "host", "mysql", "-p", "db"],  # mysql's separate -p prompts
        [
            "python",
            "-u",
            "train.py",
            "--lr=0.1",
            "time:12",
            "http://host:8080/a",
            "sh",
            "-c",
            "a b",
        ],
        ["python", "train.py", "--use_auth_token", "--model", "bert"],  # a flag: no value
    ],
)
def test_ordinary_words_are_kept(argv: list[str]) -> None:
    """Names that only look like secret ones, ports after -p and user names stay as written."""
    assert redact_argv(argv) == argv
