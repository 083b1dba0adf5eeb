"""Redaction of secrets in a command line, before it is recorded in a task (``tasktrace run``).

A name is *secret* (:func:`is_secret_name`) when, split into words (at ``-``, ``_``, ``.``, any
other punctuation and camelCase: ``--wandb-key``, ``X_API_KEY``, ``--accessKey`` →
``wandb key``, ``x api key``, ``access key``; case ignored), its last word is not one of
:data:`PATH_WORDS` (``file``, ``path``, ``dir``, ...: ``--token-file``, ``--key-file``,
``--password-file`` give where a secret is, a path, not the secret: kept) and one of these
holds:

- a word contains a stem of :data:`SECRET_WORDS` (``password``, ``passwd``, ``passphrase``,
  ``passcode``, ``secret``, ``credential``, ``authorization``, ``bearer``, ``signature``,
  ``cookie``, ``apikey``, ``privatekey``, ``jwt``, ``webhook``: ``--dbpassword``,
  ``AWS_SECRET_ACCESS_KEY``, ``X-Amz-Credential``, ``--bearer``, ``--slack-webhook-url``);
- a word is ``pat`` (a personal access token: ``--github-pat``), or is or ends with
  ``token`` or ``pwd`` (``--hf-token``, ``GITHUB_TOKEN``, ``MYSQL_PWD``), not ``--tokenizer``
  nor ``--max-tokens``;
- two words are ``private key``, ``access key``, ``api key``, ``signing key``, ``encryption
  key`` or ``master key``, anywhere (``--private-key-pem``, ``--access-key-id``);
- the *last* word is ``pass``, ``pw``, ``auth``, ``cred``, ``creds``, ``sig``, or is or ends
  with ``key`` (``--pass``, ``--db-pw``, ``--basic-auth``, ``--key``, ``--apikey``, a URL
  query's ``sig=``): the option names the secret itself. Not ``--keyword``, ``--keys``,
  ``--key-column``, ``--pass-through``, ``--auth-type``, ``--author``; but a ``--sort-key``
  or ``--primary-key`` value is hidden too (a name cannot tell).

What is replaced by :data:`REDACTED`, word by word:

- the value of a secret option, after it or attached: ``--pass pw``, ``-token pw`` (one dash,
  as Go programs take), ``--password=pw``, ``-Djavax.net.ssl.keyStorePassword=pw``; a next
  word that is a long option (``--use-auth-token --model m``) is taken for an option, kept;
- a secret assignment, alone or as an option's value: ``API_KEY=abc``, ``--env
  AWS_SECRET_ACCESS_KEY=abc`` → ``API_KEY=***``;
- a header-like ``Name: value`` (or ``Name:value``) whose name is secret, alone or as an
  option's value: ``-H "Authorization: Bearer abc"`` → ``Authorization: ***``, ``X-Api-Key:
  abc``, ``Cookie: ...``, openssl's ``pass:abc`` → ``pass:***``;
- the password of ``user:password`` after a user option (``-u``, ``-U``, or a name whose last
  word is ``user``: curl's ``--user``, ``--proxy-user``), attached too: ``-u alice:pw`` →
  ``-u alice:***``, ``-ualice:pw``, ``--user=alice:pw``; a value without ``:`` is kept;
- the password of a program that takes one as a short option
  (:data:`~tasktrace.core.secret_shapes.SHORT_PASSWORD`; the program anywhere before it in the
  line, as in ``docker exec db mysql -pSECRET``): attached only for the MySQL clients and 7-Zip
  (``mysql -pSECRET`` → ``-p***``; a separate ``mysql -p dbname`` is a database name, ``-p``
  alone prompts), separate or attached for ``mongosh -p``, ``sqlcmd -P``, ``bcp -P``,
  ``ldapsearch -w`` (and the other ``ldap*`` tools), ``zip -P``, ``unzip -P``, ``sshpass -p``,
  ``redis-cli -a``, and ``login -p`` after ``docker``, ``podman``, ``nerdctl``, ``buildah``,
  ``skopeo``, ``helm``, ``oras``. ``-p`` is left alone elsewhere (a port, a path: ``psql -p
  5432``, ``ssh -p 22``, ``docker run -p 8080:80``, ``python -m http.server -p``): other short
  options are the program's own;
- ``htpasswd -b``'s password argument (``htpasswd -b FILE USER PASSWORD``, ``-nb USER
  PASSWORD``);
- a credential recognised by its shape, whatever its name, anywhere in a word
  (:data:`~tasktrace.core.secret_shapes.TOKEN_SHAPES`: GitHub's ``ghp_…`` and
  ``github_pat_…``, AWS's ``AKIA…``, JSON web tokens ``eyJ….eyJ….…``, Slack's ``xoxb-…``,
  ``sk-…`` API keys, ...), and the path of a webhook URL that is its credential
  (``https://hooks.slack.com/services/***``);
- a URL's password (``https://user:pw@host`` → ``https://user:***@host``);
- a query's secret-looking items (a secret name, ``sig`` included), in a URL or any word
  (``host/x?token=abc&page=2`` → ``host/x?token=***&page=2``; items split by ``&`` or ``;``,
  the fragment kept): a query is assignments too, and presigned links carry their
  credentials there (``X-Amz-Signature``, Azure's ``sig``);
- within a word holding a whole command line (``sh -c 'mysql -pSECRET db'``): the same rules
  over its shell words, which are then re-quoted (only when something was hidden).

Redaction is a best effort over names: a secret passed under an innocent name (``--x hunter2``)
cannot be recognised, which is why ``tasktrace run`` records the argv only when asked
(``--record-argv``).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tasktrace.core.secret_shapes import (
    CODE_ASSIGNMENT,
    LOGIN_PROGRAMS,
    SECRET_URL_PATHS,
    SHORT_PASSWORD,
    TOKEN_SHAPES,
    positional_passwords,
)

__all__ = [
    "PATH_WORDS",
    "REDACTED",
    "SECRET_WORDS",
    "is_secret_name",
    "mask_url",
    "mask_value",
    "redact_argv",
]

REDACTED = "***"
"""What a secret value is replaced with."""

SECRET_WORDS = (
    "apikey",
    "authorization",
    "bearer",
    "cookie",
    "credential",
    "jwt",
    "passcode",
    "passphrase",
    "passwd",
    "password",
    "privatekey",
    "secret",
    "signature",
    "webhook",
)
"""Stems that make a name secret wherever they are in one of its words (lower case)."""

PATH_WORDS = frozenset({"file", "path", "dir", "directory", "filename", "folder"})
"""Last words that make a name a path's, never a secret's (``--token-file``, ``--key-path``)."""

_WORD_ENDINGS = ("token", "pwd")  # a word that is or ends with one of these
_WORDS_ANYWHERE = frozenset({"pat"})  # a personal access token: --github-pat
_KEY_KINDS = frozenset({"private", "access", "api", "signing", "encryption", "master"})
_LAST_WORDS = frozenset({"pass", "pw", "auth", "cred", "creds", "sig"})  # the name's last word
_LAST_ENDING = "key"  # the name's last word is or ends with it
_USER_OPTIONS = frozenset({"-u", "-U"})  # curl's -u/--user, -U/--proxy-user
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_ASSIGNMENT = re.compile(r"^(?P<dashes>-*)(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)=(?P<value>.*)$", re.S)
_HEADER = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>\s*:\s*)(?P<value>(?!//).*)$", re.S
)
_QUERY_ITEM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#?\s]+)=)[^&;#\s]*")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/:@\s]*:)[^/@\s]+(?P<at>@)")
_FORM = re.compile(r"^[^=&\s]+=[^&]*(?:&[^=&\s]+=[^&]*)+$")  # a=1&password=x (a request body)
_LONG_OPTION = re.compile(r"^--[A-Za-z]")  # never taken for a value (no secret starts so)
_OPTION = re.compile(r"^--?(?P<name>[A-Za-z_][A-Za-z0-9_.\-]+)$")  # -token, --api-key (no =)


def _words(name: str) -> list[str]:
    """Split a name into lower-case words: ``X-Amz-Signature``, ``accessKey``, ``API_KEY``."""
    return [word.lower() for word in _WORDS.findall(name)]


def is_secret_name(name: str) -> bool:
    """Whether an option, variable or header name seems to name a secret (rules above).

    Args:
        name: ``--api-key``, ``-token``, ``TOKEN``, ``X-Api-Key``; leading dashes are ignored.

    Returns:
        ``True`` for ``--password``, ``--hf-token``, ``--wandb-key``, ``--pass``,
        ``Authorization``, ``--access-key-id``; ``False`` for ``--keyword``, ``--key-column``,
        ``--tokenizer``, ``--token-file``.
    """
    words = _words(name)
    if not words or words[-1] in PATH_WORDS:
        return False
    if any(stem in word for word in words for stem in SECRET_WORDS):
        return True
    if _WORDS_ANYWHERE.intersection(words):
        return True
    if any(a in _KEY_KINDS and b == "key" for a, b in itertools.pairwise(words)):
        return True
    if any(word.endswith(_WORD_ENDINGS) for word in words):
        return True
    return words[-1] in _LAST_WORDS or words[-1].endswith(_LAST_ENDING)


def _is_user_option(word: str) -> bool:
    """Whether ``word`` is an option taking ``user:password`` (``-u``, ``--proxy-user``)."""
    if word in _USER_OPTIONS:
        return True
    match = _OPTION.match(word)
    return match is not None and _words(match["name"])[-1:] == ["user"]


def _hide_password(userinfo: str) -> str:
    """``alice:pw`` → ``alice:***``; a value without ``:`` is kept."""
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{REDACTED}" if colon else userinfo


def _redact_query_item(match: re.Match[str]) -> str:
    return match["head"] + REDACTED if is_secret_name(match["name"]) else match[0]


def _redact_form(text: str) -> str | None:
    """``a=1&password=x`` → ``a=1&password=***``; ``None`` where ``text`` is no such form."""
    if _FORM.match(text) is None:
        return None
    return _QUERY_ITEM.sub(_redact_query_item, "&" + text)[1:]


def _redact_json(data: object) -> object:
    if isinstance(data, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_name(k) else _redact_json(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_redact_json(v) for v in data]
    return data


def _redact_value(value: str, *, user: bool) -> str:
    """Redact a word or an option's attached value (a header, a request body, user:pw...)."""
    form = _redact_form(value)
    if form is not None:
        return form
    if value[:1] == "{":  # a JSON request body: its secret-named fields
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return json.dumps(_redact_json(data), ensure_ascii=False)
    header = _HEADER.match(value)
    if header is not None and is_secret_name(header["name"]):
        return f"{header['name']}{header['sep']}{REDACTED}"
    if user:
        return _hide_password(value)
    if any(c.isspace() for c in value):  # a command line in one word: sh -c '...'
        try:
            parts = shlex.split(value)
        except ValueError:  # unbalanced quotes: plain words then
            parts = value.split()
        return _replace_parts(value, parts, redact_argv(parts))
    return value


def _replace_parts(text: str, parts: list[str], hidden: list[str]) -> str:
    """Put each changed shell word of ``text`` back in place, redacted, keeping the rest as is.

    A changed word not found in ``text`` as written (escaped, or quoted in pieces) makes the
    whole text the words re-quoted (``shlex.join``), so that nothing secret is kept.
    """
    out, done, start = [], 0, 0  # text[:done] is in out; the next word is looked for at start
    for part, new in zip(parts, hidden, strict=True):
        at = text.find(part, start)
        if part != new and at < 0:
            return shlex.join(hidden)
        if at >= 0:
            start = at + len(part)
        if part != new:
            out.append(text[done:at] + new)
            done = start
    return "".join(out) + text[done:]


def _redact_word(word: str) -> str:
    word = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<at>", word)
    before, mark, query = word.partition("?")
    if mark:  # the items after the first "?" (earlier "&" or ";" are not a query's)
        word = before + _QUERY_ITEM.sub(_redact_query_item, mark + query)
    form = _redact_form(word)
    if form is not None:
        return form
    match = _ASSIGNMENT.match(word)
    if match is not None:
        head = f"{match['dashes']}{match['name']}="
        if is_secret_name(match["name"]):
            return head + REDACTED
        user = bool(match["dashes"]) and _words(match["name"])[-1:] == ["user"]
        return head + _redact_value(match["value"], user=user)
    header = _HEADER.match(word[2:]) if word[:1] == "-" and word[1:2].isalpha() else None
    if header is not None and is_secret_name(header["name"]):  # curl's -HX-Api-Key:abc
        return f"{word[:2]}{header['name']}{header['sep']}{REDACTED}"
    return _redact_value(word, user=False)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """Return a copy of ``argv`` with secret values replaced by :data:`REDACTED`.

    Args:
        argv: A command line, program first (or any list of shell words).

    Returns:
        The same number of words; rules in the module docstring. Pure, thread-safe.
    """
    out: list[str] = []
    hide_next = user_next = False
    short: tuple[str, bool] | None = None  # the current program's password option
    login = False  # after docker, podman, ...: their login's -p is a password
    passwords = positional_passwords(argv)
    for at, word in enumerate(argv):
        if at in passwords:
            out.append(REDACTED)
            continue
        if (hide_next or user_next) and _LONG_OPTION.match(word) is None:
            out.append(REDACTED if hide_next else _hide_password(word))
            hide_next = user_next = False
            continue
        hide_next = user_next = False  # a flag (--use-auth-token): the next option is kept
        program = word.rsplit("/", 1)[-1]
        if program in SHORT_PASSWORD:
            short = SHORT_PASSWORD[program]
        elif program in LOGIN_PROGRAMS or (login and word == "login"):
            short, login = (("-p", True), False) if login else (None, True)
        elif short is not None and word.startswith(short[0]):
            if word == short[0]:
                hide_next = short[1]
                out.append(word)
            else:
                out.append(short[0] + REDACTED)
            short = None  # one password a program: a later ssh -p 22 is a port again
            continue
        option = _OPTION.match(word)
        if option is not None and is_secret_name(option["name"]):
            hide_next = True
        elif _is_user_option(word):
            user_next = True
        elif word[:2] in _USER_OPTIONS and ":" in word:  # -ualice:pw
            out.append(word[:2] + _hide_password(word[2:]))
            continue
        out.append(_hide_shapes(_redact_word(word)))
    return out


def _hide_shapes(word: str) -> str:
    """Hide the credentials ``word`` holds by their shape, and secrets assigned in inline code.

    By shape: a token, a webhook URL's path. In code: the quoted value a secret-like name is
    given (``python -c 'PASSWORD="…"'``).
    """
    word = TOKEN_SHAPES.sub(REDACTED, word)
    if "=" in word or ":" in word:
        word = CODE_ASSIGNMENT.sub(_hide_code_value, word)
    return SECRET_URL_PATHS.sub(rf"\g<keep>{REDACTED}", word)


def _hide_code_value(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    return f"{match['head']}{REDACTED}{match['q']}"


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


def mask_value(value: object, name: str = "") -> object:
    """Return a settings value with its secrets replaced by :data:`REDACTED`, for a message.

    The masking of ``tasktrace config``, through tables and lists of any depth: a string under
    a secret-looking key (:func:`is_secret_name`: ``token``, ``password``...) is hidden whole;
    every value of a ``headers`` table is; another string holding ``://`` or ``@`` is masked
    as a URL (:func:`mask_url`: its password and query values; text with ``@`` that is no URL
    is hidden whole). Other values are returned as they are. Pure, thread-safe.

    Args:
        value: A raw settings value: a string, number, list or table (mapping), any depth.
        name: The key ``value`` is under (the last part of its key path; ``""``: none).
    """
    if isinstance(value, Mapping):
        if name.lower() == "headers":
            return {key: REDACTED for key in value}
        return {key: mask_value(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item, name) for item in value]
    if not isinstance(value, str):
        return value
    if name and is_secret_name(name):
        return REDACTED
    return mask_url(value) if "://" in value or "@" in value else value
