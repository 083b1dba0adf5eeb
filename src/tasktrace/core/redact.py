"""Redaction of secrets in a command line, before it is recorded in a task (``tasktrace run``).

A value is replaced by :data:`REDACTED` when it belongs to an option or assignment whose name
looks secret (:data:`SECRET_WORDS`, matched in the name with ``-`` and ``_`` ignored):

- ``--password hunter2`` and ``--password=hunter2`` → ``--password ***`` / ``--password=***``;
- ``-p``-style short options are left alone (their meaning is the program's own);
- ``API_KEY=abc`` and ``--env AWS_SECRET_ACCESS_KEY=abc`` → ``API_KEY=***``;
- a URL with a password (``https://user:pw@host``) → ``https://user:***@host``;
- a query's secret-looking items, in a URL or any word (``host/x?token=abc&page=2`` →
  ``host/x?token=***&page=2``; items split by ``&`` or ``;``, the fragment kept): a query is
  assignments too, and presigned links carry their credentials there (``X-Amz-Signature``).

Redaction is a best effort over names: a secret passed under an innocent name (``--x hunter2``)
cannot be recognised, which is why ``tasktrace run`` records the argv only when asked
(``--record-argv``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "SECRET_WORDS", "is_secret_name", "mask_url", "redact_argv"]

REDACTED = "***"
"""What a secret value is replaced with."""

SECRET_WORDS = (
    "apikey",
    "authorization",
    "credential",
    "passphrase",
    "passwd",
    "password",
    "privatekey",
    "pwd",
    "secret",
    "signature",
    "token",
)
"""Substrings of an option or variable name (lower case, ``-``/``_`` removed) marking it secret."""

_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*)=(.*)$", re.DOTALL)
_QUERY_ITEM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#?\s]+)=)[^&;#\s]*")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/:@\s]*:)[^/@\s]+(?P<at>@)")


def is_secret_name(name: str) -> bool:
    """Whether an option or variable name seems to hold a secret (``--api-key``, ``TOKEN``)."""
    key = name.lstrip("-").lower().replace("-", "").replace("_", "")
    return any(word in key for word in SECRET_WORDS)


def _redact_query_item(match: re.Match[str]) -> str:
    return match["head"] + REDACTED if is_secret_name(match["name"]) else match[0]


def _redact_word(word: str) -> str:
    word = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<at>", word)
    before, mark, query = word.partition("?")
    if mark:  # the items after the first "?" (earlier "&" or ";" are not a query's)
        word = before + _QUERY_ITEM.sub(_redact_query_item, mark + query)
    match = _ASSIGNMENT.match(word.removeprefix("--"))
    if match is not None and is_secret_name(match.group(1)):
        prefix = "--" if word.startswith("--") else ""
        return f"{prefix}{match.group(1)}={REDACTED}"
    return word


def redact_argv(argv: Sequence[str]) -> list[str]:
    """Return a copy of ``argv`` with secret values replaced by :data:`REDACTED`.

    Args:
        argv: A command line, program first.

    Returns:
        The same number of words; rules in the module docstring.
    """
    out: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            hide_next = False
            out.append(REDACTED)
            continue
        if word.startswith("--") and "=" not in word and is_secret_name(word):
            hide_next = True
            out.append(word)
            continue
        out.append(_redact_word(word))
    return out


def mask_url(url: str) -> str:
    """Return ``url`` with its password and every query value replaced by :data:`REDACTED`.

    ``http://user:pw@host:9090/p?token=abc#x`` → ``http://user:***@host:9090/p?token=***``
    (the fragment is dropped). Text that does not parse as a URL is returned whole only when
    it has no ``@``, ``?`` or ``#``; otherwise it is :data:`REDACTED`. So is text without
    ``scheme://host`` (``http//user:pw@host``): no host part to find a password in.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        parts = None
    if parts is None or not (parts.scheme and parts.netloc):
        return url if not any(c in url for c in "@?#") else REDACTED
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{REDACTED}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, REDACTED) for k, _ in pairs], safe=REDACTED)
    if parts.query and not query:  # a query that is not key=value pairs
        query = REDACTED
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
