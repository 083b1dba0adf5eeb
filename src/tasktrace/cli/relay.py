r"""The command's terminal output relayed above ``tasktrace run``'s live panel.

The command writes to a pseudo-terminal; :class:`OutputRelay` reads it and shows it on the
user's terminal above a :class:`rich.live.Live` display, by these rules:

- **complete lines** (ended by a newline) are printed above the panel, as they were written
  (straight to the terminal, colours and all), or, for a line rewritten with ``\r``, as its
  latest state: what a terminal shows at its end. The lines read since the last draw are
  printed together, with the live display drawn again below them, in one write: the display
  is drawn at most every :data:`DRAW_INTERVAL_S` (10 a second), whatever the output's rate
  (a line printed at once when the last draw is older), and every :data:`PANEL_REFRESH_S`
  when no output comes. (Each line printed on its own, with the panel drawn again after it,
  doubled the run time of a command printing 20,000 lines.);
- a **line being rewritten with** ``\r`` (a tqdm, click or Keras progress bar) is drawn as
  the top line of the live display, in its latest state, on a line of its own (cut at the
  terminal's width), while the panel goes on below it: shown at the next draw;
- any **other partial line** (a prompt: ``input("continue? ")``, pdb's ``(Pdb)``,
  ``Overwrite? [y/N]``, or ``print(..., end="")``) is not completed within
  :data:`PARTIAL_GRACE_S`: the panel **steps aside**. It is erased and no longer redrawn, the
  cursor is shown, and the command's output is written to the terminal as it comes, untouched,
  so the prompt shows where the user's typing echoes (the command reads the user's terminal
  itself). The panel is drawn again below the output once it ends with a newline (the answer
  was typed and the command printed a line), or once the command, seen waiting for input,
  has read the typed line (ended by Enter);
- while the command **waits for the user to type** (blocked reading the terminal, see
  :mod:`tasktrace.cli.ttyread`; checked every :data:`INPUT_CHECK_S`), the panel steps aside
  too, even with no partial line (a prompt printed with its newline, a bare ``input()``);
- output that moves the cursor or redraws the screen (escape sequences other than colours and
  erase-line, backspaces other than Keras's before a ``\r``: full-screen and multi-bar
  programs) makes the panel step aside the same way, the output written untouched.

Rich's own ``redirect_stdout`` holds a partial line back until its newline, as the line-by-line
relay did; and the live display cannot be drawn below a partial line: rich erases it from the
first line it drew, which then holds the partial line. All drawing is done by the relay's
thread (rich's refresh thread is not started), under the relay's lock.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import threading
import time
from collections.abc import Callable
from typing import Final

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.text import Text

__all__ = [
    "DRAW_INTERVAL_S",
    "INPUT_CHECK_S",
    "PANEL_REFRESH_S",
    "PARTIAL_GRACE_S",
    "OutputRelay",
    "latest_state",
]

PARTIAL_GRACE_S: Final = 0.05
"""Seconds a partial line (not a ``\\r`` bar) may wait for its end before the panel steps aside."""
DRAW_INTERVAL_S: Final = 0.1
"""Least seconds between two draws of the live display for output (lines, a bar's updates)."""
PANEL_REFRESH_S: Final = 0.25
"""Seconds between two draws of the live display when no output comes, and least seconds
between two builds of the panel (its figures sampled: 4 times a second at most)."""
INPUT_CHECK_S: Final = 0.2
"""Seconds between two checks whether the command waits for the user to type."""

_SCREEN_CONTROL = re.compile(r"\x1b(?!\[[0-9;]*[mK])|[\x08\x0b\x0c]")
"""Output that moves the cursor or redraws the screen: any escape but colours and erase-line."""
_BAR_SEGMENTS: Final = 4
"""The ``\r`` segments of a line kept to draw its latest state (the line is not kept whole)."""
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_ERASE_LINE = re.compile(r"\x1b\[[0-9;]*K")
_BACKSPACES = re.compile(r"\x08+\r")  # Keras: back over the bar, then a carriage return
_HELD_CHARS: Final = 1 << 20
"""Characters of whole lines held for the next draw beyond which they are printed at once."""


def latest_state(line: str) -> Text:
    r"""Return what a terminal shows of ``line`` (no newline), rewritten with ``\r``.

    Each ``\r`` segment is written over the previous ones from the line's start, an erase-line
    (``ESC [ K``) drops what is left of them; colours are kept (:meth:`rich.text.Text.from_ansi`,
    called only for the segments still seen). A pure function of its argument; thread-safe.
    """
    seen: list[str] = []  # the segments still seen, last first, each wider than those after it
    covered = 0
    for written in reversed(_BACKSPACES.sub("\r", line).split("\r")):
        erase = _ERASE_LINE.search(written) is not None
        segment = _ERASE_LINE.sub("", written)
        width = len(_COLOURS.sub("", segment))
        if width > covered:
            seen.append(segment)
            covered = width
        if erase:  # nothing written before it is left
            break
    shown = Text()
    for segment in reversed(seen):
        text = Text.from_ansi(segment, end="")
        shown = Text.assemble(text, shown[len(text) :]) if shown else text
    return shown


class OutputRelay:
    """A live display on ``console`` with a command's terminal output relayed above it.

    Args:
        console: The user's terminal (standard error).
        panel: Builds the panel for at most the given number of lines (called from the
            relay's thread, or :meth:`start`'s and :meth:`stop`'s, never at once).
        waiting: Whether the command waits for the user to type (blocked reading the
            terminal), called every :data:`INPUT_CHECK_S` from the relay's thread.

    :meth:`start` and :meth:`stop` are called from one thread (``run``'s); the relay runs in a
    thread of its own, which draws the live display (rich's refresh thread draws it only when
    there is no output to relay: ``start(None)``).
    """

    def __init__(
        self,
        console: Console,
        panel: Callable[[int], RenderableType],
        waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        """Create a relay that shows nothing yet."""
        self.console = console
        self._panel = panel
        self._waiting = waiting
        self._checked = 0.0  # when waiting() was last called
        self._seen_waiting = False  # the command waited for input since the panel stepped aside
        self._live: Live | None = None
        self._lock = threading.Lock()  # the state below, and the writes to the terminal
        self._pending = ""  # the line being written (since the last newline), as written
        self._held_since: float | None = None  # a partial line waits for its end since then
        self._aside = False  # the panel stepped aside: output is written untouched
        self._bar: Text | None = None  # a \r line's latest state, drawn above the panel
        self._lines: list[str] = []  # whole lines not printed yet, as written (no newline)
        self._held_chars = 0  # their characters
        self._drawn = 0.0  # when the live display was last drawn
        self._stale = False  # lines are held or the bar changed since the last draw
        self._auto = False  # rich's refresh thread draws the display (no output to relay)
        self._built: tuple[float, int, RenderableType] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False  # stop() was called: the panel is not drawn again

    def start(self, fd: int | None) -> None:
        """Draw the live display; relay (then close) the pseudo-terminal's master ``fd``."""
        with self._lock:
            self._auto = fd is None
            self._show()
        if fd is not None:
            self._thread = threading.Thread(
                target=self._run, args=(fd,), name="tasktrace-relay", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Relay the rest of the output (5 s at most), then erase the live display."""
        if self._thread is not None:
            self._thread.join(5.0)  # ends at end of output (the command has exited)
            self._thread = None
        with self._lock:
            self._stopped = True
            self._hide()

    # ----- the display -------------------------------------------------------------------------

    def _show(self) -> None:
        """Draw a new live display from the cursor's line (a new one: it erases nothing above)."""
        self._aside = self._seen_waiting = False
        if self._stopped:  # output after the command ended (its children's): no panel now
            return
        self._live = Live(
            _Frame(self._frame),  # drawn as it is when drawn: after lines printed, too
            console=self.console,
            auto_refresh=self._auto,
            refresh_per_second=1 / PANEL_REFRESH_S,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)
        self._drawn = time.monotonic()

    def _hide(self) -> None:
        if self._live is not None:
            self._live.stop()  # transient: erased, the cursor shown where it began
            self._live = None

    def _frame(self) -> RenderableType:
        """Return the live display now: the bar, if any, on its own line over the panel."""
        bar = self._bar
        room = self.console.size.height - 1 - (bar is not None)  # the cursor's line stays below
        now = time.monotonic()
        if self._built is None or now - self._built[0] >= PANEL_REFRESH_S or self._built[1] != room:
            self._built = (now, room, self._panel(room))
        panel = self._built[2]
        if bar is None:
            return panel
        bar = bar.copy()
        # one line, ended (latest_state's text has no end: the panel's top edge went on the
        # bar's line, cut off with the title by a bar as wide as the terminal)
        bar.no_wrap, bar.overflow, bar.end = True, "ellipsis", "\n"
        return Group(bar, panel)

    def _print_held(self) -> None:
        """Print the lines held, in one write (a live display, if any, drawn again below)."""
        if self._lines:
            lines, self._lines, self._held_chars = self._lines, [], 0
            self.console.print(_Lines(lines), soft_wrap=True)

    def _draw(self) -> None:
        """Print the lines held above the live display and draw the display anew: one write."""
        self._stale = False
        self._drawn = time.monotonic()
        if self._lines:
            self._print_held()  # rich draws the live display below them
        elif self._live is not None:
            self._live.refresh()

    def _write(self, text: str) -> None:
        """Write ``text`` untouched (the panel stepped aside)."""
        self.console.file.write(text)
        self.console.file.flush()

    def _step_aside(self, text: str) -> None:
        """Erase the panel; write the lines held, then ``text`` (the rest of the line) untouched."""
        self._bar = None
        self._hide()
        self._print_held()
        self._aside = True
        self._held_since = None
        self._stale = False
        self._write(text)

    # ----- the relay ---------------------------------------------------------------------------

    def _run(self, fd: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            ready, _, _ = select.select([fd], [], [], self._timeout())
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the command and its children closed the terminal
                    chunk = b""
                if not chunk:
                    break
                self._feed(decoder.decode(chunk))
            self._timed()  # what is due, also while output keeps coming
        self._feed(decoder.decode(b"", final=True))
        self._end()
        os.close(fd)

    def _timeout(self) -> float:
        """Seconds until a held partial line is due, a draw, or an input check."""
        with self._lock:
            now = time.monotonic()
            due = self._checked + INPUT_CHECK_S
            if self._held_since is not None:
                due = min(due, self._held_since + PARTIAL_GRACE_S)
            if self._stale:
                due = min(due, self._drawn + DRAW_INTERVAL_S)
            elif self._live is not None and not self._auto:
                due = min(due, self._drawn + PANEL_REFRESH_S)
            return max(0.0, due - now)

    def _timed(self) -> None:
        now = time.monotonic()
        waiting = None
        if now - self._checked >= INPUT_CHECK_S:
            self._checked = now
            waiting = self._waiting()  # outside the lock: it reads /proc
        with self._lock:
            if waiting and not self._aside:  # typing must echo on a still screen
                self._step_aside(self._pending)
            if self._aside and waiting is not None:
                if waiting:
                    self._seen_waiting = True
                elif self._seen_waiting:  # the line typed was ended by Enter: a new line
                    self._pending = ""
                    self._show()
                return
            if self._held_since is not None and now - self._held_since >= PARTIAL_GRACE_S:
                self._step_aside(self._pending)
            if self._aside:
                return
            if self._stale:
                if now - self._drawn >= DRAW_INTERVAL_S:
                    self._draw()
            elif self._live is not None and not self._auto and now - self._drawn >= PANEL_REFRESH_S:
                self._draw()  # the panel's figures

    def _feed(self, text: str) -> None:
        """Show ``text``, the command's next output, by the module's rules."""
        if not text:
            return
        with self._lock:
            shown = _BACKSPACES.sub("\r", self._pending + text)
            if not self._aside and _SCREEN_CONTROL.search(shown):
                self._step_aside(self._pending)  # from the line's start: untouched
            if self._aside:
                self._write(text)
                # only whether the line ended matters now: a bounded tail (hours without \n)
                self._pending = (self._pending[-1:] + text).rpartition("\n")[2][-1:]
                if not self._pending:  # the line ended: the panel comes back below it
                    self._show()
                return
            *lines, self._pending = (self._pending + text).split("\n")
            if self._pending.count("\r") > _BAR_SEGMENTS:  # a bar updated for hours: its last
                self._pending = "\r" + "\r".join(self._pending.split("\r")[-_BAR_SEGMENTS:])
            bar = self._bar
            self._bar = latest_state(self._pending) if "\r" in self._pending else None
            if self._pending and self._bar is None:  # a prompt? wait a moment for its end
                self._held_since = self._held_since or time.monotonic()
            else:
                self._held_since = None
            if lines:
                self._lines.extend(lines)
                self._held_chars += sum(map(len, lines))
                self._stale = True
            elif self._bar != bar:
                self._stale = True
            if self._stale and (
                time.monotonic() - self._drawn >= DRAW_INTERVAL_S or self._held_chars >= _HELD_CHARS
            ):
                self._draw()

    def _end(self) -> None:
        """End of output: a partial line left is shown, the cursor put on a new line."""
        with self._lock:
            if self._aside:
                if self._pending:
                    self._write("\n")
            else:
                if self._pending:
                    self._bar = None
                    self._lines.append(self._pending)
                self._print_held()
            self._pending, self._held_since, self._stale = "", None, False


class _Frame:
    """The live display, built when drawn, with its console's default options.

    Rich draws a live display after each ``console.print`` with that call's options
    (``markup``, ``highlight``, ``no_wrap``, ``overflow``): the relay's ``soft_wrap=True`` made
    those frames show the tree's markup as text, unwrapped. Built when drawn, the display
    printed below lines is the relay's latest (its bar), not the last one refreshed.
    """

    def __init__(self, build: Callable[[], RenderableType]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(self.build(), console.options.update_width(options.max_width))


class _Lines:
    r"""Whole lines of the command's output, as a terminal shows them, for one ``print``.

    A line is written as it came, straight to the terminal (colours and all: no markup, no
    escaping), unless it is rewritten with ``\r`` (or Keras's backspaces): then its latest
    state (:func:`latest_state`). The terminal's own ``\r`` before each newline is dropped.
    After lines with escape sequences, the terminal's colours are reset (the panel comes next).
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        plain: list[str] = []
        escapes = False
        for line in self.lines:
            line = line.removesuffix("\r")  # noqa: PLW2901 - the pseudo-terminal's \r\n
            if "\r" in line or "\x08" in line:
                if plain:
                    yield Segment("".join(plain))
                    plain = []
                yield from latest_state(line).render(console)
                yield Segment.line()
            else:
                plain.append(line + "\n")
                escapes = escapes or "\x1b" in line
        if escapes:
            plain.append("\x1b[0m")
        if plain:
            yield Segment("".join(plain))
