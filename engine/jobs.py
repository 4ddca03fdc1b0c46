"""Qt-free job protocol: progress, status and cancellation for long-running engine work.

Engine jobs are plain functions taking a ``progress`` argument that satisfies
:class:`Progress`. They report with ``set_status``/``set_progress`` and call
:func:`checkpoint` between frames or batches; a cancelled job raises
:class:`Cancelled` and leaves no half-written output behind. A job may also hand out
partial results (a training's per-epoch curves) with :func:`report`; a progress object
that has a ``report`` method receives them, others ignore them. The GUI adapts this to Qt
signals in one worker type; the CLI adapts it to ``tqdm`` on stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable


class Cancelled(Exception):
    """Raised inside a job when its cancellation was requested."""


@runtime_checkable
class Progress(Protocol):
    """What a long-running engine function may report to and ask of its caller."""

    def set_status(self, text: str) -> None:
        """Describe the current step in a few words."""

    def set_progress(self, done: int, total: int | None) -> None:
        """Report ``done`` of ``total`` units (``total=None`` when unknown)."""

    def is_cancelled(self) -> bool:
        """Return True once the caller asked the job to stop."""


class NullProgress:
    """A progress sink that records nothing and is never cancelled."""

    def set_status(self, text: str) -> None:  # noqa: D102
        pass

    def set_progress(self, done: int, total: int | None) -> None:  # noqa: D102
        pass

    def is_cancelled(self) -> bool:  # noqa: D102
        return False


class CallbackProgress:
    """Forward progress to callables and cancel through a :class:`threading.Event`.

    Parameters
    ----------
    on_status, on_progress : callable, optional
        Receivers of status text and ``(done, total)`` pairs.
    cancel_event : threading.Event, optional
        Set it to request cancellation; one is created when omitted.
    """

    def __init__(
        self,
        on_status: Callable[[str], None] | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self._on_status = on_status
        self._on_progress = on_progress
        self.cancel_event = cancel_event or threading.Event()

    def set_status(self, text: str) -> None:  # noqa: D102
        if self._on_status is not None:
            self._on_status(text)

    def set_progress(self, done: int, total: int | None) -> None:  # noqa: D102
        if self._on_progress is not None:
            self._on_progress(done, total)

    def is_cancelled(self) -> bool:  # noqa: D102
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        """Request cancellation."""
        self.cancel_event.set()


class SubProgress:
    """One stage of a longer job: maps the stage's progress onto part of the outer bar.

    The outer progress runs from 0 to 1000; this stage covers ``[start, start + share)``
    of it (fractions of the whole). Cancellation is the outer job's.

    Parameters
    ----------
    outer : Progress or None
        The whole job's progress.
    start, share : float
        Where the stage begins and how much of the whole it covers (0..1).
    label : str, optional
        Prefix for the stage's status texts.
    """

    def __init__(
        self, outer: Progress | None, start: float, share: float, label: str = ""
    ) -> None:
        self.outer, self.start, self.share, self.label = outer, start, share, label

    def set_status(self, text: str) -> None:  # noqa: D102
        if self.outer is not None:
            self.outer.set_status(f"{self.label}: {text}" if self.label else text)

    def set_progress(self, done: int, total: int | None) -> None:  # noqa: D102
        if self.outer is not None and total:
            self.outer.set_progress(int(1000 * (self.start + self.share * done / total)), 1000)

    def is_cancelled(self) -> bool:  # noqa: D102
        return self.outer is not None and self.outer.is_cancelled()

    def report(self, record: dict) -> None:
        """Pass a partial result on to the outer progress."""
        report(self.outer, record)


class CancelOnly:
    """A progress that forwards only cancellation (a chunk's own bar is not shown).

    Parameters
    ----------
    outer : Progress or None
        The job's progress.
    """

    def __init__(self, outer: Progress | None) -> None:
        self.outer = outer

    def set_status(self, text: str) -> None:  # noqa: D102
        pass

    def set_progress(self, done: int, total: int | None) -> None:  # noqa: D102
        pass

    def is_cancelled(self) -> bool:  # noqa: D102
        return self.outer is not None and self.outer.is_cancelled()


def report(progress: Progress | None, record: dict) -> None:
    """Hand a partial result (e.g. ``{"epoch": 3, "val_macro_f1": 0.8}``) to the caller.

    Parameters
    ----------
    progress : Progress or None
        The job's progress object; one without a ``report`` method ignores the record.
    record : dict
        JSON-ready values.
    """
    fn = getattr(progress, "report", None)
    if fn is not None:
        fn(record)


def checkpoint(progress: Progress | None) -> None:
    """Raise :class:`Cancelled` if ``progress`` asks the job to stop.

    Parameters
    ----------
    progress : Progress or None
        The job's progress object; ``None`` never cancels.
    """
    if progress is not None and progress.is_cancelled():
        raise Cancelled("cancelled by the user")
