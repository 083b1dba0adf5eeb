"""Secrets named or shaped in ways users reported, and what must stay (core.redact).

Before: every ``leaked`` case below kept its secret in ``tasktrace run``'s label, argv, task
file and span name (field reports: token shapes under innocent or unlisted names, a URL's
``sig=``, ``-p``/``-P`` passwords of mongosh, sqlcmd and docker login, ``htpasswd -b``).
"""

from __future__ import annotations

import shlex

import pytest

from tasktrace.core.redact import REDACTED, redact_argv

_GHP = "ghp_" + "a1B2" * 9  # 36 characters, as GitHub's
_FINE_GRAINED = "github_pat_" + "11ABCDEFG0" * 4
_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("p --github-pat ghp_SECRET1", "p --github-pat ***"),
        ("p --bearer SECRET4", "p --bearer ***"),
        ("p --private-key-pem SECRET5", "p --private-key-pem ***"),
        ("p --jwt SECRET16", "p --jwt ***"),
        ("p --passcode S3CRETpc", "p --passcode ***"),
        ("p --access-key-id AKIASECRET14", "p --access-key-id ***"),
        ("p --client-credentials=c --my-secret s", "p --client-credentials=*** --my-secret ***"),
        ("p --webhook https://hooks.slack.com/services/T0/B0/S", "p --webhook ***"),
        ("p --hf_token=hf_SECRET2", "p --hf_token=***"),
        # a URL query's signature (Azure SAS), whatever the option's name
        (
            "p --sas-url https://a.blob.core.windows.net/c?sv=1&sig=SECRET9&se=2",
            "p --sas-url https://a.blob.core.windows.net/c?sv=1&sig=***&se=2",
        ),
        # shapes: recognised by value, under any name or none
        (f"p --x {_GHP} {_FINE_GRAINED}", "p --x *** ***"),
        ("p --id AKIAIOSFODNN7EXAMPLE", "p --id ***"),
        (f"p --header=X-Thing:{_JWT}", "p --header=X-Thing:***"),
        ("p xoxb-1234567890-abcdefghij sk-proj-abcDEF1234567890xyz", "p *** ***"),
        (
            f"p https://x-access-token:{_GHP}@github.com/o/r",
            "p https://x-access-token:***@github.com/o/r",
        ),
        (f"p https://h/x?q={_GHP}&page=2", "p https://h/x?q=***&page=2"),
        (
            "p https://hooks.slack.com/services/T0/B0/S3CRETslack",
            "p https://hooks.slack.com/services/***",
        ),
        (
            "p https://discord.com/api/webhooks/123/S3CRETd?wait=1",
            "p https://discord.com/api/webhooks/123/***?wait=1",
        ),
        # programs that take a password as a short option, separate or attached
        ("mongosh -u admin -p S3CRETmongo", "mongosh -u admin -p ***"),
        ("sqlcmd -S srv -U sa -P S3CRETsql", "sqlcmd -S srv -U sa -P ***"),
        ("sqlcmd -S srv -PS3CRETsql", "sqlcmd -S srv -P***"),
        ("docker login -u me -p S3CRETdock registry.io", "docker login -u me -p *** registry.io"),
        ("podman --log-level info login -p S3CRET r", "podman --log-level info login -p *** r"),
        ("ldapsearch -x -D cn=a -w S3CRETldap", "ldapsearch -x -D cn=a -w ***"),
        ("zip -P S3CRETzip out.zip f", "zip -P *** out.zip f"),
        ("7z a -pS3CRET7z out.7z f", "7z a -p*** out.7z f"),
        ("htpasswd -b f user S3CRETht", "htpasswd -b f user ***"),
        ("htpasswd -cbB -C 10 f user S3CRETht", "htpasswd -cbB -C 10 f user ***"),
        ("htpasswd -nb user S3CRETht", "htpasswd -nb user ***"),
        ("mysql --password S3CRETmy", "mysql --password ***"),
    ],
)
def test_leaked_kinds_are_hidden(command: str, expected: str) -> None:
    """Each reported kind is hidden (the split is shlex's, as a shell gives the words)."""
    assert redact_argv(shlex.split(command)) == shlex.split(expected)


def test_a_password_in_a_shell_command_line_is_hidden() -> None:
    """The same rules hold inside ``sh -c '...'`` (one word holding a command line)."""
    hidden = redact_argv(
        ["sh", "-c", f"docker login -p S1 && htpasswd -b f u S2 && git push {_GHP}"]
    )
    assert hidden == [
        "sh",
        "-c",
        f"docker login -p {REDACTED} && htpasswd -b f u {REDACTED} && git push {REDACTED}",
    ]


@pytest.mark.parametrize(
    "command",
    [
        "python train.py --epochs 3 --lr 0.1 --out /data/run-3/key/file.csv",
        "python -m http.server -p 8080",  # -p is no password of python's
        "docker run -p 8080:80 -e MODE=x img",  # docker's -p is a port, except after login
        "psql -h db -p 5432 -U bob app",  # psql takes no password on the command line
        "ssh -p 22 host",
        "htpasswd -v f user",  # -v without -b prompts: no password argument
        "mongosh mongodb://db:27017/app --quiet",
        "p --token-file /etc/x --key-file k.pem --password-file /run/secrets/db --cert-path c",
        "p --patience 5 --pattern '*.py' --path x --key-column id --passes 3",
        "p --skip sk-learn ghp_short AKIA123 eyJhbGci",  # too short for a token's shape
        "p https://h/x?page=2&sort=asc https://hooks.example.com/services/a",
        'python -c \'print("a=b"); name = "bob"; keys = "k"\'',  # code, nothing secret
        "python train.py --model risk-assessment-2024-final-v1",
    ],
)
def test_ordinary_values_are_kept(command: str) -> None:
    """Ports, paths (a path to a secret is no secret), counts and look-alikes stay as written."""
    argv = shlex.split(command)
    assert redact_argv(argv) == argv


def test_a_token_after_a_dash_or_underscore_and_secrets_assigned_in_inline_code() -> None:
    """A persona's two leaks: a token in a program's path, a password in Python's inline code.

    The path showed in the ``cannot start`` error; ``python -c 'PASSWORD="…"'`` was kept where
    ``sh -c``'s ``PASSWORD=`` was hidden.
    """
    assert redact_argv([f"./nonexist-cmd-{_GHP}"]) == [f"./nonexist-cmd-{REDACTED}"]
    assert redact_argv([f"x_{_GHP}"]) == [f"x_{REDACTED}"]
    code = "import sys;PASSWORD=\"S3CRETPW\"; api_key = 'zzz'; n = 'kept'"
    assert redact_argv(["python", "-c", code]) == [
        "python",
        "-c",
        f"import sys;PASSWORD=\"{REDACTED}\"; api_key = '{REDACTED}'; n = 'kept'",
    ]
    assert redact_argv(["perl", "-e", "my $token = 'abc'; print 1"])[2] == (
        f"my $token = '{REDACTED}'; print 1"
    )
