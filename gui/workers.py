"""The one way the GUI runs long engine work: a superqt worker on the global thread pool.

An engine job is a plain function taking ``progress`` (see :mod:`hemalens.engine.jobs`).
:func:`start_job` runs it in a :class:`superqt.utils.FunctionWorker` (a ``QRunnable`` with a
separate ``QObject`` for its signals) on ``QThreadPool.globalInstance()``, hands it a
:class:`QtProgress` whose reports become queued Qt signals, and shows a modeless
``QProgressDialog`` with a Cancel button. The :class:`Job` is kept alive in a module-level
set until it ends; :func:`cancel_all` is what the main window calls on close.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Qt, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QPushButton, QWidget
from superqt.utils import FunctionWorker, create_worker

from hemalens.engine.errors import HemaLensError
from hemalens.engine.jobs import Cancelled

log = logging.getLogger(__name__)

#: Jobs that have not ended yet; holding them here keeps their Python objects alive.
_ACTIVE: set[Job] = set()


def one_line_message(exc: BaseException) -> str:
    """Return the one-line text shown to the user for ``exc``.

    Parameters
    ----------
    exc : BaseException
        The error raised by a job.

    Returns
    -------
    str
        ``str(exc)`` for HemaLens errors (already one line naming the file), else
        ``"TypeName: message"``, whitespace collapsed to one line.
    """
    text = str(exc) if isinstance(exc, HemaLensError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


#: QSettings key of the Dask scheduler heavy jobs run on ("" or missing: this computer).
SCHEDULER_KEY = "scaleout/scheduler"


def configured_cluster(settings: Any = None) -> Any:
    """Return where heavy jobs run: the scheduler set in the settings, else in-process.

    Read in the GUI thread when a job starts; the job passes it to the engine (import,
    predict, explain all), whose executor cancels the cluster's futures on Cancel.

    Parameters
    ----------
    settings : QSettings, optional
        Default the application's.

    Returns
    -------
    hemalens.engine.scaleout.Cluster
    """
    from PySide6.QtCore import QSettings

    from hemalens.engine.scaleout import parse_cluster

    settings = settings if settings is not None else QSettings()
    return parse_cluster(0, str(settings.value(SCHEDULER_KEY, "") or ""))


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """Show ``message`` in a critical message box (tests monkeypatch ``QMessageBox.critical``).

    Parameters
    ----------
    parent : QWidget or None
        Dialog parent.
    title, message : str
        Window title and the one-line message.
    """
    QMessageBox.critical(parent, title, message)


class QtProgress(QObject):
    """Engine :class:`~hemalens.engine.jobs.Progress` that reports through Qt signals.

    Called from the worker thread; the signals are delivered queued to receivers living
    in the GUI thread. Progress reports are throttled to at most one per
    ``min_interval`` seconds (the first and the final ``done == total`` always pass) so a
    job reporting per item cannot flood the event loop.

    Parameters
    ----------
    cancel_event : threading.Event, optional
        Set it to request cancellation; one is created when omitted.
    min_interval : float
        Minimum seconds between two progress signals (0 disables throttling).
    parent : QObject, optional
        Qt parent.
    """

    status_changed = Signal(str)
    progress_changed = Signal(int, object)  # done, total (None when unknown)
    reported = Signal(object)  # a partial result (engine.jobs.report), e.g. an epoch

    def __init__(
        self,
        cancel_event: threading.Event | None = None,
        min_interval: float = 0.05,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.cancel_event = cancel_event or threading.Event()
        self.min_interval = float(min_interval)
        self._last_emit = -float("inf")

    def set_status(self, text: str) -> None:
        """Emit ``status_changed`` with ``text`` (statuses are rare: never throttled)."""
        self.status_changed.emit(str(text))

    def set_progress(self, done: int, total: int | None) -> None:
        """Emit ``progress_changed(done, total)``, throttled to ``min_interval``."""
        now = time.monotonic()
        final = total is not None and done >= total
        if final or now - self._last_emit >= self.min_interval:
            self._last_emit = now
            self.progress_changed.emit(int(done), None if total is None else int(total))

    def is_cancelled(self) -> bool:
        """Return True once :meth:`cancel` was called (or the event was set)."""
        return self.cancel_event.is_set()

    def report(self, record: dict) -> None:
        """Emit ``reported`` with a partial result (never throttled: they are rare)."""
        self.reported.emit(dict(record))

    def cancel(self) -> None:
        """Request cancellation; the job stops at its next checkpoint."""
        self.cancel_event.set()


class Job(QObject):
    """A running engine function: its worker, progress adapter, dialog and outcome.

    Signals are emitted in the GUI thread. ``state`` goes from ``"running"`` to exactly one
    of ``"done"``, ``"cancelled"`` or ``"error"``; ``ended`` carries that final state.
    """

    status = Signal(str)
    progress = Signal(int, object)
    reported = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    ended = Signal(str)

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict[str, Any],
        *,
        title: str,
        parent: QWidget | None,
        on_result: Callable[[Any], None] | None,
        on_error: Callable[[BaseException], None] | None,
        show_dialog: bool,
        show_errors: bool,
        min_interval: float,
        transient: bool = False,
    ) -> None:
        super().__init__()
        self.title = title
        self.transient = transient
        self.state = "running"
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self.last_status = ""
        self.done, self.total = 0, None  # type: tuple[int, int | None]
        self._parent = parent
        self._on_result = on_result
        self._on_error = on_error
        self._show_errors = show_errors

        self.progress_adapter = QtProgress(min_interval=min_interval, parent=self)
        self.progress_adapter.status_changed.connect(self._on_status)
        self.progress_adapter.progress_changed.connect(self._on_progress)
        self.progress_adapter.reported.connect(self.reported)

        self.dialog: QProgressDialog | None = None
        if show_dialog:
            self.dialog = self._make_dialog(parent, title)

        self.worker: FunctionWorker = create_worker(
            fn, *args, progress=self.progress_adapter, _start_thread=False,
            _ignore_errors=True, **kwargs,
        )
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.worker.warned.connect(self._on_warned)

    def _make_dialog(self, parent: QWidget | None, title: str) -> QProgressDialog:
        dlg = QProgressDialog(title, "Cancel", 0, 0, parent)
        dlg.setWindowTitle(title)
        self._cancel_button = QPushButton("Cancel", dlg)
        dlg.setCancelButton(self._cancel_button)
        # Modeless: a modal QProgressDialog calls processEvents() inside setValue().
        dlg.setWindowModality(Qt.WindowModality.NonModal)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.setMinimumDuration(300)
        # Keep the dialog up saying "Cancelling…" until the job really stops.
        dlg.canceled.disconnect(dlg.cancel)
        dlg.canceled.connect(self.cancel)
        return dlg

    @property
    def is_running(self) -> bool:
        """Whether the job has not ended yet."""
        return self.state == "running"

    def start(self) -> Job:
        """Queue the worker on the global thread pool and keep this job alive."""
        _ACTIVE.add(self)
        if not self.transient:
            registry().add(self)
        self.worker.start()
        return self

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (until it ended)."""
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def message(self) -> str:
        """The job's state in one line (its error, when it failed)."""
        if self.state == "error" and self.error is not None:
            return one_line_message(self.error)
        return self.last_status or self.state

    @Slot()
    def cancel(self) -> None:
        """Ask the engine function to stop at its next checkpoint."""
        if not self.is_running:
            return
        self.progress_adapter.cancel()
        if self.dialog is not None:
            self.dialog.setLabelText(f"Cancelling {self.title}…")
            self._cancel_button.setEnabled(False)

    @Slot(str)
    def _on_status(self, text: str) -> None:
        self.last_status = text
        if self.dialog is not None and not self.progress_adapter.is_cancelled():
            self.dialog.setLabelText(text)
        self.status.emit(text)

    @Slot(int, object)
    def _on_progress(self, done: int, total: int | None) -> None:
        self.done, self.total = int(done), total
        if self.dialog is not None:
            if total is None or total <= 0:
                self.dialog.setRange(0, 0)  # busy indicator
            else:
                self.dialog.setRange(0, total)
                self.dialog.setValue(min(done, total))
        self.progress.emit(done, total)

    @Slot(object)
    def _on_returned(self, result: Any) -> None:
        self.result = result

    @Slot(object)
    def _on_errored(self, exc: BaseException) -> None:
        self.error = exc

    @Slot(tuple)
    def _on_warned(self, args: tuple) -> None:
        # superqt diverts warnings raised in the worker to this signal; log them.
        log.warning("%s: %s", self.title, warnings.formatwarning(*args[:4]).strip())

    @Slot()
    def _on_finished(self) -> None:
        if self.dialog is not None:
            # Closing a QProgressDialog emits canceled(): disconnect it first.
            self.dialog.canceled.disconnect(self.cancel)
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        if isinstance(self.error, Cancelled) or (
            self.error is None and self.progress_adapter.is_cancelled()
        ):
            # A job that finished despite a cancel request is still cancelled: the user
            # asked for it to stop, so its result is not applied.
            self._end("cancelled")
            log.info("%s cancelled", self.title)
            self.cancelled.emit()
        elif self.error is not None:
            exc = self.error
            self._end("error")
            log.error("%s failed: %s", self.title, one_line_message(exc),
                      exc_info=(type(exc), exc, exc.__traceback__))
            if self._show_errors:
                show_error(self._owner(), self.title, one_line_message(exc))
            if self._on_error is not None and self._owner_alive():
                self._on_error(exc)
            self.failed.emit(exc)
        else:
            self._end("done")
            if self._on_result is not None and self._owner_alive():
                self._on_result(self.result)
            self.succeeded.emit(self.result)
        self.ended.emit(self.state)

    def _owner_alive(self) -> bool:
        # A window closed while its job ran must not be called back into.
        return self._parent is None or shiboken6.isValid(self._parent)

    def _owner(self) -> QWidget | None:
        return self._parent if self._owner_alive() else None

    def _end(self, state: str) -> None:
        self.state = state
        self.ended_at = time.monotonic()
        _ACTIVE.discard(self)


class JobRegistry(QObject):
    """Every job this program started (the jobs panel lists them), newest last."""

    added = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Job] = []

    def add(self, job: Job) -> None:
        """Record a started job (the oldest finished ones are forgotten past 200)."""
        self.jobs.append(job)
        if len(self.jobs) > 200:
            self.jobs = [j for j in self.jobs if j.is_running] + [
                j for j in self.jobs if not j.is_running][-150:]
        self.added.emit(job)


_REGISTRY: JobRegistry | None = None


def registry() -> JobRegistry:
    """Return the application's job registry (created on first use, in the GUI thread)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = JobRegistry()
    return _REGISTRY


def start_job(
    fn: Callable[..., Any],
    *args: Any,
    title: str,
    parent: QWidget | None = None,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    show_dialog: bool = True,
    show_errors: bool = True,
    min_interval: float = 0.05,
    transient: bool = False,
    **kwargs: Any,
) -> Job:
    """Run ``fn(*args, progress=..., **kwargs)`` on the global thread pool.

    Parameters
    ----------
    fn : callable
        An engine function accepting a ``progress`` keyword (the Progress protocol).
    *args, **kwargs
        Passed to ``fn``.
    title : str
        Shown in the progress dialog, the error dialog and the log.
    parent : QWidget, optional
        Parent of the dialogs.
    on_result : callable, optional
        Called in the GUI thread with the return value when the job succeeds.
    on_error : callable, optional
        Called in the GUI thread with the exception when the job fails (not when it is
        cancelled).
    show_dialog : bool
        Show a modeless progress dialog with a Cancel button.
    show_errors : bool
        Show a critical message box with the one-line message when the job fails.
    min_interval : float
        Throttle of progress signals, seconds (default 0.05: about 20 per second).
    transient : bool
        A view's own short job (an explanation of the shown cell, a preview): cancelled
        without asking when the window closes, and not listed in the jobs panel.

    Returns
    -------
    Job
        The started job; connect to its signals or call :meth:`Job.cancel`.
    """
    job = Job(
        fn, args, kwargs, title=title, parent=parent, on_result=on_result, on_error=on_error,
        show_dialog=show_dialog, show_errors=show_errors, min_interval=min_interval,
        transient=transient,
    )
    return job.start()


def active_jobs(*, transient: bool = True) -> list[Job]:
    """Return the jobs that have not ended yet.

    Parameters
    ----------
    transient : bool
        Include the views' own short jobs.

    Returns
    -------
    list of Job
        Running jobs, in no particular order.
    """
    return [job for job in _ACTIVE if job.is_running and (transient or not job.transient)]


def cancel_all(timeout_ms: int = 5000) -> bool:
    """Request cancellation of every running job and wait (bounded) for the thread pool.

    Parameters
    ----------
    timeout_ms : int
        Longest wait for the pool's threads, in milliseconds.

    Returns
    -------
    bool
        True when every pool thread finished within the timeout.
    """
    for job in active_jobs():
        job.cancel()
    return bool(QThreadPool.globalInstance().waitForDone(timeout_ms))
