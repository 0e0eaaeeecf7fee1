"""How far long work has got (decoding images, checking data, evaluating runs), shown one way.

On an interactive terminal a Rich bar; otherwise a plain line each tenth of the way (or after half
a minute without one); nothing when quiet. Core code reports to `current()`, which a command sets
with `reporting(...)`; where none was set (a Ray trial process, a library caller) reports go
nowhere, so the core never writes to a stream it does not own. Rich is imported only by the
command that shows a bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PLAIN_LINES = 10  # a line each tenth of the way
PLAIN_EVERY_S = 30.0


class Task:
    """One piece of work of `total` units; this base class shows nothing."""

    def __init__(self, description: str, total: int, unit: str):
        self.description, self.total, self.unit = description, max(int(total), 0), unit
        self.completed = 0

    def advance(self, n: int = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: int) -> None:
        self.completed = min(max(int(completed), 0), self.total)
        self._show()

    def close(self) -> None:
        """The work is over (finished, failed or cut short)."""

    def _show(self) -> None:
        pass

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Reporter:
    """Makes tasks and shows them; this base class is the silent one."""

    def task(self, description: str, total: int, unit: str = "", *, transient: bool = False) -> Task:
        """`transient`: a bar that disappears once closed (a step inside a larger piece of work)."""
        return Task(description, total, unit)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        pass


class _PlainTask(Task):
    def __init__(self, emit: Callable[[str], None], description: str, total: int, unit: str):
        super().__init__(description, total, unit)
        self.emit = emit
        self.t0 = self.last_time = time.monotonic()
        self.last_shown: int | None = None

    def _line(self) -> str:
        pct = 100.0 * self.completed / self.total if self.total else 100.0
        unit = f" {self.unit}" if self.unit else ""
        done = f", {time.monotonic() - self.t0:.1f} s" if self.completed == self.total else ""
        return f"{self.description}: {self.completed}/{self.total}{unit} ({pct:.0f}%{done})"

    def _show(self) -> None:
        last = 0 if self.last_shown is None else self.last_shown
        now = time.monotonic()
        crossed = self.completed == self.total or self._tenth(self.completed) > self._tenth(last)
        stale = now - self.last_time >= PLAIN_EVERY_S
        if self.completed != self.last_shown and (crossed or stale):
            self.emit(self._line())
            self.last_shown, self.last_time = self.completed, now

    def _tenth(self, n: int) -> int:
        return n * PLAIN_LINES // self.total if self.total else 0

    def close(self) -> None:
        if self.completed and self.completed != self.last_shown:
            self.emit(self._line())
            self.last_shown = self.completed


class PlainLines(Reporter):
    """A line per tenth of each task, for logs and pipes: written to `stream` (default stderr), or
    handed to `emit` (a Rich console's `print` while its live display runs, say)."""

    def __init__(self, stream: TextIO | None = None, *, emit: Callable[[str], None] | None = None):
        self.stream, self._emit = stream, emit

    def task(self, description: str, total: int, unit: str = "", *, transient: bool = False) -> Task:
        return _PlainTask(self._emit or self._write, description, total, unit)

    def _write(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)


class _BarTask(Task):
    def __init__(self, bars, description: str, total: int, unit: str, transient: bool):
        super().__init__(description, total, unit)
        self.bars, self.transient = bars, transient
        self.id = bars.add_task(description, total=self.total, unit=unit, info="")

    def _show(self) -> None:
        self.bars.update(self.id, completed=self.completed)

    def close(self) -> None:
        if self.transient:
            self.bars.remove_task(self.id)


class RichBars(Reporter):
    """Rich bars on an interactive console; lines another console prints to a terminal stdout go
    above them. `bars`: a Rich `Progress` the command runs already (its own bars share it; it is
    started and stopped by its owner)."""

    def __init__(self, console=None, *, bars=None):
        self.owned = bars is None
        if bars is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            bars = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=console, redirect_stdout=sys.stdout.isatty(), redirect_stderr=sys.stderr.isatty(),
            )
        self.bars = bars

    def task(self, description: str, total: int, unit: str = "", *, transient: bool = False) -> Task:
        from rich.markup import escape

        return _BarTask(self.bars, escape(description), total, unit, transient)

    def __enter__(self) -> RichBars:
        if self.owned:
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.bars.stop()


def progress_for(*, quiet: bool = False, console=None) -> Reporter:
    """What a command shows: nothing when `quiet`; bars when `console` (default: a Rich console on
    stderr) is an interactive terminal; plain lines to its stream otherwise."""
    if quiet:
        return Reporter()
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if console.is_interactive:
        return RichBars(console)
    return PlainLines(console.file)


_current: Reporter = Reporter()


def current() -> Reporter:
    return _current


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """`reporter` started, and what `current()` returns, for the duration."""
    global _current
    previous = _current
    with reporter:
        _current = reporter
        try:
            yield reporter
        finally:
            _current = previous
