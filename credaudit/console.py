"""Terminal plumbing for the CLI: whether output is interactive, and a rich progress reporter.

Plain output (no colour, no progress bars) when ``CI`` is set, the stream is not a terminal, or
``NO_COLOR`` is set. Progress goes to stderr, so stdout carries only the report.
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


def console_width(stream: TextIO, default: int = 100) -> int:
    try:
        return max(60, os.get_terminal_size(stream.fileno()).columns) if stream.isatty() else default
    except (OSError, ValueError, AttributeError):
        return default


def write(text: str, stream: TextIO | None = None) -> None:
    """Write text as is (JSON must never pass through rich, which wraps long lines)."""
    (stream or sys.stdout).write(text)
