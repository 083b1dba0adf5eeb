"""``tasktrace run``'s default label: the program, not its arguments.

The label is the span's name and the task metrics' ``tasktrace.task.label`` attribute, so it
must not change from one run of a program to the next (a new span name is a new operation in
Jaeger or Tempo, a new label a new metric series). The rule (:func:`default_label`):

- the program's file name: ``./sweep.sh a b`` → ``sweep.sh``, ``/usr/bin/make -j8`` → ``make``;
- after an interpreter (:data:`INTERPRETERS`: ``python``, ``python3.12``, ``pypy3``,
  ``node``, ``ruby``, ``perl``, ``Rscript``, ``julia``, ``php``, ``lua``, ``bash``, ``sh``,
  ...), what it runs, past its own options: the script's file name (``python src/train.py
  --lr 3`` → ``python train.py``), ``-m module`` (``python -m pkg.train --lr 3`` → ``python
  -m pkg.train``), or the bare code option for code given inline (``python -c '...'`` →
  ``python -c``, ``sh -c '...'`` → ``sh -c``, ``node -e`` → ``node -e``: the code itself can be
  anything, secrets included);
- through the wrappers that run a command with another setting (:data:`WRAPPERS`: ``nohup``,
  ``time``, ``env``, ``nice``, ``timeout``, ``taskset``, ``stdbuf``, ``ionice``, ``chrt``,
  ``numactl``), the command they run: ``timeout 60 python train.py`` → ``python train.py``,
  ``env OMP_NUM_THREADS=1 nice -n 5 ./sweep.sh`` → ``sweep.sh`` (a wrapper with nothing after
  its options is the program);
- shell-quoted as a shell would need it, with the redaction of
  :func:`~tasktrace.core.redact.redact_argv` (a program named ``API_KEY=...``).

Arguments are never part of it: ``--label`` names a run, and ``--record-argv`` records the
whole command line (redacted) as the task's ``argv``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from tasktrace.core.redact import redact_argv

__all__ = ["INTERPRETERS", "WRAPPERS", "default_label"]

INTERPRETERS = re.compile(
    r"^(?P<family>python|pypy|node|nodejs|ruby|perl|Rscript|julia|php|lua|luajit|"
    r"bash|sh|dash|zsh|ksh|fish)[0-9.]*$"
)
"""Program file names after which the script (or module) run is part of the label."""

WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "nohup": (frozenset(), 0),
    "time": (frozenset({"-f", "-o", "--format", "--output"}), 0),
    "env": (frozenset({"-u", "-C", "-S", "--unset", "--chdir", "--split-string"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "timeout": (frozenset({"-s", "-k", "--signal", "--kill-after"}), 1),
    "taskset": (frozenset(), 1),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "ionice": (frozenset({"-c", "-n", "-p", "-P", "-u", "--class", "--classdata"}), 0),
    "chrt": (frozenset(), 1),
    "numactl": (
        frozenset({"-N", "-m", "-C", "-p", "-i", "-P", "--cpunodebind", "--membind"})
        | frozenset({"--physcpubind", "--preferred", "--interleave"}),
        0,
    ),
}
"""Programs that run a command: their options taking a separate value, and the words they
take before the command (``timeout``'s duration, ``taskset``'s mask or CPU list, ``chrt``'s
priority). ``env``'s ``NAME=value`` words are skipped too."""

_SHELL_CODE = frozenset("c")
# The short options (letters) that take code inline, per interpreter, alone or last in a
# cluster (python -Bc, perl -pe, bash -ec).
_CODE_LETTERS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("python", "pypy", "bash", "sh", "dash", "zsh", "ksh", "fish"), _SHELL_CODE),
    **dict.fromkeys(("perl", "ruby", "julia"), frozenset("eE")),
    **dict.fromkeys(("node", "nodejs"), frozenset("ep")),
    **dict.fromkeys(("Rscript", "lua", "luajit"), frozenset("e")),
    "php": frozenset("rR"),
}
_CODE_LONG = frozenset({"--eval", "--print", "--command", "--expression"})
# Options that take a separate value which is not the script: python -W/-X, node --require,
# ruby/node -r, perl -I/-M, a shell's -o/-O option name.
_VALUE_OPTIONS = frozenset(
    {"-W", "-X", "-o", "-O", "-I", "-M", "-r", "--require", "--import", "--loader", "--project"}
)
_CLUSTER = re.compile(r"^-[A-Za-z]+$")


def _name(word: str) -> str:
    """Return a path's file name (``./sweep.sh`` → ``sweep.sh``)."""
    return word.rstrip("/").rsplit("/", 1)[-1] or word


def default_label(argv: Sequence[str]) -> str:
    """Return the default label of ``tasktrace run argv``: the program (rules above).

    Args:
        argv: The command line, program first (not empty).

    Returns:
        ``"python train.py"`` for ``python train.py --lr 3``; pure, thread-safe.
    """
    words = _unwrapped(redact_argv(argv))
    program = _name(words[0])
    label = [program]
    interpreter = INTERPRETERS.match(program)
    if interpreter is not None:
        label += _runs(words[1:], _CODE_LETTERS[interpreter["family"]])
    return shlex.join(label)


def _unwrapped(words: list[str]) -> list[str]:
    """Return the command a chain of :data:`WRAPPERS` runs (``words`` when there is none)."""
    while (wrapper := WRAPPERS.get(_name(words[0]))) is not None:
        values, positional = wrapper
        at, skip = 1, False
        while at < len(words):
            word = words[at]
            if skip:
                skip = False
            elif word == "--":
                at += 1
                break
            elif word.startswith("-") and word != "-":
                skip = word in values  # "-n 5"; "-n5", "--signal=KILL" hold theirs
            elif "=" in word and _name(words[0]) == "env":
                pass  # NAME=value
            elif positional:
                positional -= 1
            else:
                break
            at += 1
        if at >= len(words):
            return words  # nothing after the options: the wrapper itself is the program
        words = words[at:]
    return words


def _runs(args: Sequence[str], code: frozenset[str]) -> list[str]:
    """Return what an interpreter runs: ``[script]``, ``["-m", module]``, ``["-c"]`` or ``[]``."""
    skip = False
    for at, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "-m" and at + 1 < len(args):
            return ["-m", args[at + 1]]
        elif arg.startswith("-m") and arg[2:3].isalpha():  # python -mpkg.mod
            return ["-m", arg[2:]]
        elif arg in _CODE_LONG or (_CLUSTER.match(arg) is not None and arg[-1] in code):
            return [arg]  # code inline: the option, not the code
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif arg == "--":
            return [_name(args[at + 1])] if at + 1 < len(args) else []
        elif not arg.startswith("-") or arg == "-":  # the script (- is standard input)
            return [_name(arg)]
    return []
