"""Terminal plumbing for the CLI: whether output is interactive, and a rich progress reporter.

Plain output (no colour, no progress bars) when ``CI`` is set, the stream is not a terminal, or
``NO_COLOR`` is set; progress is then a plain line per stage and at most one every 30 s while a
stage runs. Progress goes to stderr, so stdout carries only the report.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def is_interactive(stream: TextIO) -> bool:
    """Colour and progress bars allowed on ``stream``."""
    if os.environ.get("CI") or "NO_COLOR" in os.environ:
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class RichProgress:
    """A :class:`credaudit.progress.Progress` drawing rich progress bars on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, stage: str, total: int | None = None) -> None:
        self._task = self._progress.add_task(stage, total=total)

    def advance(self, steps: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, steps)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None


class PlainProgress:
    """A :class:`credaudit.progress.Progress` for logs (CI, pipes): plain lines on stderr, no bars.

    One line when a stage starts, then at most one every ``interval`` seconds while it runs (done,
    total, rate, time left) and one when it ends, so a long embedding never looks hung and a log
    never fills with redraws.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 30.0, clock=None) -> None:
        import time

        self._stream = stream
        self._interval = interval
        self._clock = clock or time.monotonic
        self._stage: str | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _say(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"credaudit: {text}\n")
        stream.flush()

    def start(self, stage: str, total: int | None = None) -> None:
        self._stage, self._total, self._done = stage, total, 0
        self._started = self._last = self._clock()
        self._say(f"{stage}: started" + (f" ({total:,} steps)" if total else ""))

    def advance(self, steps: int = 1) -> None:
        if self._stage is None:
            return
        self._done += steps
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        line = f"{self._stage}: {self._done:,}" + (f"/{self._total:,}" if self._total else "")
        if self._total:
            line += f" ({self._done / self._total:.0%})"
        line += f", {rate:,.1f}/s"
        if self._total and rate > 0:
            line += f", about {_duration((self._total - self._done) / rate)} left"
        self._say(line)

    def finish(self) -> None:
        if self._stage is not None:
            self._say(f"{self._stage}: done in {_duration(self._clock() - self._started)}")
        self._stage = None


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def console_width(stream: TextIO, default: int = 100) -> int:
    try:
        return max(60, os.get_terminal_size(stream.fileno()).columns) if stream.isatty() else default
    except (OSError, ValueError, AttributeError):
        return default


def write(text: str, stream: TextIO | None = None) -> None:
    """Write text as is (JSON must never pass through rich, which wraps long lines)."""
    (stream or sys.stdout).write(text)
