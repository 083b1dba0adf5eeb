"""Identifiers: task ids and their text, random bits from a private generator, non-task span ids.

``uuid.uuid4()`` reads ``os.urandom``, a system call that releases the GIL on every task: an
exporting batch-processor thread then takes it, and the task waits (measured: +14 µs a task).
Task ids, trace ids and span ids need uniqueness, not secrecy: they come from a private
:class:`random.Random`, seeded from ``os.urandom`` at import and again in every forked child,
and untouched by a program's own ``random.seed(...)`` (a seeded experiment would otherwise
repeat its ids every run).

Task ids are version-4 UUIDs drawn as a *series* per process: the first 80 bits (the first
20 hex digits, version and variant included) are random, drawn once per process (again in a
forked child), and the last 48 bits are ``k * C mod 2**48`` for a counter ``k`` that starts at
a random value and an odd constant ``C`` (a permutation: no two of the next 2**48 ids of a
process are equal, and neighbouring ids do not look alike). So a task id costs one step of a
C counter (which steps by ``C``) and a mask instead of 128 random bits, and its text
(:func:`task_id_text`, the span attribute) is the series' prefix and 12 hex digits instead of
``str(uuid)``'s formatting of 128 bits: together about 3,700 machine instructions less per task
(``valgrind --tool=cachegrind``, a nested task). Ids of different processes differ in their 74
random prefix bits.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import uuid
from typing import Final

__all__ = ["HOSTNAME", "new_task_id", "random_bits", "span_task_id", "task_id_text"]

HOSTNAME: Final = socket.gethostname()
"""This host's name (``socket.gethostname()``, read once at import)."""

_rng = random.Random()  # noqa: S311 - ids need uniqueness, not secrecy (see the module docstring)
_getrandbits = _rng.getrandbits
_LOW48: Final = (1 << 48) - 1
_LOW64: Final = (1 << 64) - 1
_SCRAMBLE: Final = 0x9E3779B97F4B  # odd: multiplying by it modulo 2**48 permutes 48-bit values
# In the first 80 bits of a UUID: the version nibble (bits 79-76 of the UUID) and the variant's
# two bits (bits 63-62), to clear and set.
_HIGH_CLEAR: Final = ~((0xF << 28) | (0x3 << 14))
_HIGH_SET: Final = (0x4 << 28) | (0x2 << 14)
_UUID: Final = uuid.UUID
_new_uuid: Final = object.__new__
_set_int: Final = vars(uuid.UUID)["int"].__set__  # the slots UUID.__init__ sets
_set_is_safe: Final = vars(uuid.UUID)["is_safe"].__set__
_UNKNOWN: Final = uuid.SafeUUID.unknown

_high = 0  # this process's series: its first 80 bits,
_base = 0  # the same shifted into place,
_prefix = ""  # their text with its hyphens ("xxxxxxxx-xxxx-4xxx-yxxx-"),
_counter = itertools.count()  # and the counter of the last 48 bits (scrambled, see below)


def _new_series() -> None:
    """Draw this process's series (at import, and in a forked child after reseeding)."""
    global _high, _base, _prefix, _counter  # noqa: PLW0603 - one series per process
    _high = (_getrandbits(80) & _HIGH_CLEAR) | _HIGH_SET
    _base = _high << 48
    hex_ = f"{_base:032x}"
    _prefix = f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-"
    # k * _SCRAMBLE for k = a random start, start + 1, ...: masked to 48 bits, a permutation.
    _counter = itertools.count(_getrandbits(48) * _SCRAMBLE, _SCRAMBLE)


def _reseed_in_child() -> None:
    _rng.seed()
    _new_series()


_new_series()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_in_child)  # a forked child draws its own ids


def random_bits(n: int) -> int:
    """Return ``n`` random bits from tasktrace's private generator (see the module docstring)."""
    return _getrandbits(n)


def new_task_id() -> uuid.UUID:
    """Return the next task id of this process's series: a version-4 UUID (see the module doc).

    Built as ``uuid.UUID(int=...)`` builds it (the same two attributes), without its argument
    checks (the value is a 128-bit version-4 integer by construction), through the class's own
    slot descriptors. Thread-safe (the counter steps in one C call under the GIL).
    """
    task_id = _new_uuid(_UUID)
    _set_int(task_id, _base | (next(_counter) & _LOW48))
    _set_is_safe(task_id, _UNKNOWN)
    return task_id


def task_id_text(task_id: uuid.UUID) -> str:
    """Return ``str(task_id)``: for an id of this process's series, from the series' prefix.

    Any other UUID (read from a file, another process's) goes through ``str``.
    """
    low = task_id.int - _base  # the last 48 bits, for an id of this series
    if low >> 48 == 0:  # 0 <= low < 2**48 (a negative low shifts to -1)
        return _prefix + "%012x" % low  # noqa: UP031 - cheaper than format()
    return str(task_id)


def span_task_id(trace_id: int, span_id: int) -> uuid.UUID:
    """Return the deterministic task id of a non-task span: low 64 bits of trace id + span id."""
    return uuid.UUID(int=((trace_id & _LOW64) << 64) | span_id)
