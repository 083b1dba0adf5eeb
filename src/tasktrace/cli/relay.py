r"""The command's terminal output relayed above ``tasktrace run``'s live panel.

The command writes to a pseudo-terminal; :class:`OutputRelay` reads it and shows it on the
user's terminal above a :class:`rich.live.Live` display, by these rules:

- a **complete line** (ended by a newline) is printed above the panel
  (``Live.console.print``), as its latest state: of a line rewritten with ``\r``, what a
  terminal shows at its end;
- a **line being rewritten with** ``\r`` (a tqdm, click or Keras progress bar) is drawn as
  the top line of the live display, in its latest state, as soon as it is written (redrawn at
  most every :data:`BAR_REFRESH_S`), while the panel goes on below it;
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
first line it drew, which then holds the partial line.
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
from rich.text import Text

__all__ = ["BAR_REFRESH_S", "INPUT_CHECK_S", "PARTIAL_GRACE_S", "OutputRelay", "latest_state"]

PARTIAL_GRACE_S: Final = 0.05
"""Seconds a partial line (not a ``\\r`` bar) may wait for its end before the panel steps aside."""
BAR_REFRESH_S: Final = 0.1
"""Least seconds between two redraws for a progress bar's updates (the panel's own: 0.25 s)."""
INPUT_CHECK_S: Final = 0.2
"""Seconds between two checks whether the command waits for the user to type."""
PANEL_REUSE_S: Final = 0.2
"""Seconds a built panel is redrawn as it is (bar updates do not resample the processes)."""

_SCREEN_CONTROL = re.compile(r"\x1b(?!\[[0-9;]*[mK])|[\x08\x0b\x0c]")
"""Output that moves the cursor or redraws the screen: any escape but colours and erase-line."""
_BAR_SEGMENTS: Final = 4
"""The ``\r`` segments of a line kept to draw its latest state (the line is not kept whole)."""
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_ERASE_LINE = re.compile(r"\x1b\[[0-9;]*K")
_BACKSPACES = re.compile(r"\x08+\r")  # Keras: back over the bar, then a carriage return


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
        panel: Builds the panel for at most the given number of lines (called from rich's
            refresh thread and the relay's, never at once).
        waiting: Whether the command waits for the user to type (blocked reading the
            terminal), called every :data:`INPUT_CHECK_S` from the relay's thread.

    :meth:`start` and :meth:`stop` are called from one thread (``run``'s); the relay runs in a
    thread of its own; rich redraws from its refresh thread.
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
        self._bar_drawn = 0.0  # when a bar update was last redrawn
        self._bar_stale = False  # the bar changed since its last redraw
        self._built: tuple[float, int, RenderableType] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False  # stop() was called: the panel is not drawn again

    def start(self, fd: int | None) -> None:
        """Draw the live display; relay (then close) the pseudo-terminal's master ``fd``."""
        with self._lock:
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
            get_renderable=self._frame,
            console=self.console,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def _hide(self) -> None:
        if self._live is not None:
            self._live.stop()  # transient: erased, the cursor shown where it began
            self._live = None

    def _frame(self) -> RenderableType:
        """Return the live display now: the bar, if any, over the panel (under Live's lock)."""
        bar = self._bar
        room = self.console.size.height - 1 - (bar is not None)  # the cursor's line stays below
        now = time.monotonic()
        if self._built is None or now - self._built[0] >= PANEL_REUSE_S or self._built[1] != room:
            self._built = (now, room, self._panel(room))
        panel = self._built[2]
        if bar is None:
            return _OwnOptions(panel)
        bar = bar.copy()
        bar.no_wrap, bar.overflow = True, "ellipsis"  # one line: the panel's room counts it so
        return _OwnOptions(Group(bar, panel))

    def _print(self, line: Text) -> None:
        live = self._live
        console = live.console if live is not None else self.console
        console.print(line, soft_wrap=True, highlight=False, markup=False)

    def _write(self, text: str) -> None:
        """Write ``text`` untouched (the panel stepped aside)."""
        self.console.file.write(text)
        self.console.file.flush()

    def _step_aside(self, text: str) -> None:
        """Erase the panel; write ``text`` (the output not shown yet) untouched."""
        self._bar = None
        self._hide()
        self._aside = True
        self._held_since = None
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
        """Seconds until a held partial line is due, a bar's deferred redraw, or an input check."""
        with self._lock:
            now = time.monotonic()
            due = self._checked + INPUT_CHECK_S
            if self._held_since is not None:
                due = min(due, self._held_since + PARTIAL_GRACE_S)
            if self._bar_stale:
                due = min(due, self._bar_drawn + BAR_REFRESH_S)
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
            if self._held_since is not None:
                if now - self._held_since >= PARTIAL_GRACE_S:
                    self._step_aside(self._pending)
            elif self._bar_stale:
                self._redraw_bar()

    def _redraw_bar(self) -> None:
        self._bar_stale = False
        self._bar_drawn = time.monotonic()
        if self._live is not None:
            self._live.refresh()

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
            if lines:  # the bar's redraw, if any, with the lines
                if self._live is not None and (bar is not None or self._bar is not None):
                    self._redraw_bar()
                for line in lines:
                    self._print(latest_state(line))
            elif self._bar is not None and self._bar != bar:
                self._bar_stale = True
                if time.monotonic() - self._bar_drawn >= BAR_REFRESH_S:
                    self._redraw_bar()

    def _end(self) -> None:
        """End of output: a partial line left is shown, the cursor put on a new line."""
        with self._lock:
            if self._aside:
                if self._pending:
                    self._write("\n")
            elif self._pending:
                self._bar = None
                self._print(latest_state(self._pending))
            self._pending, self._held_since, self._bar_stale = "", None, False


class _OwnOptions:
    """A renderable drawn with its console's default options, whatever the caller passes.

    Rich draws a live display after each ``console.print`` with that call's options
    (``markup``, ``highlight``, ``no_wrap``, ``overflow``): the relay's ``markup=False,
    soft_wrap=True`` made those frames show the tree's markup as text, unwrapped.
    """

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(self.inner, console.options.update_width(options.max_width))
