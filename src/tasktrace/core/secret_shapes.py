"""What a secret looks like whatever its name, and which programs take one as a short option.

The tables :mod:`tasktrace.core.redact` uses besides names:

- :data:`TOKEN_SHAPES`: credentials recognised by their value alone, wherever they are in a
  word (``--x ghp_…``, ``Authorization: token ghp_…``, ``https://h/?q=AKIA…``): GitHub tokens
  (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``), GitLab's ``glpat-``,
  AWS access key ids (``AKIA…``, ``ASIA…``, 20 characters), JSON web tokens
  (``eyJ….eyJ….…``), Slack tokens (``xoxb-``, ``xoxp-``, ``xapp-``, …), API keys shaped
  ``sk-…`` (OpenAI, Anthropic; with a digit, 20 characters or more), Stripe's ``sk_live_`` /
  ``rk_test_`` …, Hugging Face's ``hf_…``, Google's ``AIza…`` and npm's ``npm_…``;
- :data:`SECRET_URL_PATHS`: URLs whose path is the credential (Slack's
  ``hooks.slack.com/services/…`` webhooks, Discord's ``/api/webhooks/ID/…``): the part after
  the group kept is hidden;
- :data:`SHORT_PASSWORD`: programs whose short option takes a password, and
  :data:`LOGIN_PROGRAMS`, whose ``login`` subcommand takes ``-p PASSWORD``;
- :func:`positional_passwords`: ``htpasswd -b``'s password argument.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "CODE_ASSIGNMENT",
    "LOGIN_PROGRAMS",
    "SECRET_URL_PATHS",
    "SHORT_PASSWORD",
    "TOKEN_SHAPES",
    "positional_passwords",
]

TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|xox[abposre]-[A-Za-z0-9-]{10,}"
    r"|xapp-[A-Za-z0-9-]{10,}"
    r"|sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|npm_[A-Za-z0-9]{36}"
    r")"
)
"""Credentials recognised by their shape, whatever the option or variable they are given as,
as a word or in one after any character but a letter or digit (``./run-ghp_…``, ``x_sk-…``)."""

CODE_ASSIGNMENT = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_])(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*[:=]\s*(?P<q>[\"']))"
    r"(?P<value>[^\"'\n]*)(?P=q)"
)
"""A quoted string assigned to a name in inline code (``python -c 'PASSWORD="…"'``, ``perl -e``,
``node -e``, ``key: "…"``): hidden where the name is secret-like."""

SECRET_URL_PATHS = re.compile(
    r"(?P<keep>hooks\.slack\.com/(?:services|workflows|triggers)/"
    r"|discord(?:app)?\.com/api/webhooks/[0-9]+/)[^\s?#'\"]+"
)
"""URLs whose path holds the credential: the ``keep`` group is kept, the rest of the path hidden."""

_MYSQL = (
    "mariadb",
    "mariadb-dump",
    "mysql",
    "mysqladmin",
    "mysqlcheck",
    "mysqldump",
    "mysqlimport",
    "mysqlpump",
    "mysqlshow",
    "mysqlsh",
)
_MONGO = (
    "mongo",
    "mongodump",
    "mongoexport",
    "mongofiles",
    "mongoimport",
    "mongorestore",
    "mongosh",
    "mongostat",
    "mongotop",
)
_LDAP = (
    "ldapadd",
    "ldapcompare",
    "ldapdelete",
    "ldapmodify",
    "ldapmodrdn",
    "ldappasswd",
    "ldapsearch",
    "ldapwhoami",
)

SHORT_PASSWORD: dict[str, tuple[str, bool]] = {
    **dict.fromkeys(_MYSQL, ("-p", False)),  # a separate mysql -p prompts: the next word is a db
    **dict.fromkeys(("7z", "7za", "7zz"), ("-p", False)),  # -pPASSWORD; -p alone prompts
    **dict.fromkeys(_MONGO, ("-p", True)),
    **dict.fromkeys(("sqlcmd", "bcp", "osql"), ("-P", True)),
    **dict.fromkeys(_LDAP, ("-w", True)),  # -W prompts
    **dict.fromkeys(("zip", "unzip", "zipcloak"), ("-P", True)),
    "sshpass": ("-p", True),
    "redis-cli": ("-a", True),
}
"""Programs (file names) whose short option takes a password: the option, and whether a
separate next word is the password (``True``) or only an attached value is (``False``).
Not ``psql`` (``-p`` is its port; it takes no password on the command line), ``ssh``."""

LOGIN_PROGRAMS = frozenset({"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras"})
"""Programs whose ``login`` subcommand takes ``-p PASSWORD`` (elsewhere ``-p`` is a port:
``docker run -p 8080:80``)."""


def positional_passwords(argv: Sequence[str]) -> set[int]:
    """Return the indexes in ``argv`` of passwords given as plain arguments.

    ``htpasswd -b [-c…] FILE USER PASSWORD`` and ``htpasswd -nb USER PASSWORD`` (batch mode,
    any of its flags combined: ``-cb``, ``-bB``; ``-C COST`` takes a value). Pure, thread-safe.
    """
    found: set[int] = set()
    for at, word in enumerate(argv):
        if word.rsplit("/", 1)[-1] != "htpasswd":
            continue
        flags, skip = "", False
        positional: list[int] = []
        for index in range(at + 1, len(argv)):
            arg = argv[index]
            if skip:
                skip = False
            elif not positional and arg.startswith("-") and len(arg) > 1:
                flags += arg[1:]
                skip = arg.endswith("C")  # -C COST: the next word is the cost
            else:
                positional.append(index)
        wanted = 2 if "n" in flags else 3
        if "b" in flags and len(positional) >= wanted:
            found.add(positional[wanted - 1])
    return found
