"""The progress protocol the pipeline reports through.

The pipeline never sees a terminal: it calls ``start``/``advance``/``finish`` on whatever object
it was given. The CLI passes a rich-backed reporter; the Python API, batch jobs and tests pass
nothing and get :class:`NullProgress`.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of one stage at a time."""

    def start(self, stage: str, total: int | None = None) -> None:
        """A stage begins; ``total`` is the number of ``advance`` steps to expect, if known."""

    def advance(self, steps: int = 1) -> None:
        """The current stage made ``steps`` units of progress."""

    def finish(self) -> None:
        """The current stage is done."""


class NullProgress:
    """A :class:`Progress` that ignores everything."""

    def start(self, stage: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
