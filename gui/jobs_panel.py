"""The jobs panel: every running and finished job with progress, time, cancel and its error.

The status bar shows the newest running job with a small progress bar and a Cancel
button, so a long import or training never needs a modal dialog.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QStatusBar,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.tables import read_only_table
from hemalens.gui.workers import Job, registry

COLUMNS = ("Job", "State", "Progress", "Time", "Message", "")


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _eta(job: Job) -> str:
    if job.is_running and job.total and 0 < job.done < job.total:
        left = job.elapsed * (job.total - job.done) / job.done
        return f" (about {_elapsed(left)} left)"
    return ""


class JobsPanel(QWidget):
    """A table of the registry's jobs, newest first.

    Parameters
    ----------
    status_bar : QStatusBar, optional
        Where the newest running job is shown too.
    """

    def __init__(self, parent: QWidget | None = None, status_bar: QStatusBar | None = None
                 ) -> None:
        super().__init__(parent)
        self.table = read_only_table(self, COLUMNS, select_rows=True)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        self._rows: list[Job] = []
        self._status_bar = status_bar
        self._status = QWidget(self)
        row = QHBoxLayout(self._status)
        row.setContentsMargins(0, 0, 0, 0)
        self.status_text = QLabel(self._status)
        self.status_bar_progress = QProgressBar(self._status)
        self.status_bar_progress.setMaximumWidth(160)
        self.status_bar_progress.setMaximumHeight(14)
        self.status_cancel = QPushButton("Cancel", self._status)
        self.status_cancel.setToolTip("Cancel this job (nothing it was writing is kept)")
        row.addWidget(self.status_text)
        row.addWidget(self.status_bar_progress)
        row.addWidget(self.status_cancel)
        self.status_cancel.clicked.connect(self._cancel_current)
        self._status.hide()
        if status_bar is not None:
            status_bar.addWidget(self._status)
        registry().added.connect(self._add)
        for job in registry().jobs:
            self._add(job)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _add(self, job: Job) -> None:
        self._rows.insert(0, job)
        self.table.insertRow(0)
        for c in range(len(COLUMNS)):
            self.table.setItem(0, c, QTableWidgetItem(""))
        bar = QProgressBar(self.table)
        bar.setMaximumHeight(16)
        self.table.setCellWidget(0, 2, bar)
        button = QPushButton("Cancel", self.table)
        button.clicked.connect(job.cancel)
        self.table.setCellWidget(0, 5, button)
        # Bound methods (not lambdas) so Qt disconnects them when this panel goes.
        for sig in (job.status, job.progress, job.ended):
            sig.connect(self._job_changed)
        self._update(job)

    def _job_changed(self, *_args: Any) -> None:
        job = self.sender()
        if isinstance(job, Job):
            self._update(job)

    def _row(self, job: Job) -> int:
        return self._rows.index(job) if job in self._rows else -1

    def _update(self, job: Job) -> None:
        r = self._row(job)
        if r < 0:
            return
        self.table.item(r, 0).setText(job.title)
        self.table.item(r, 1).setText(job.state)
        self.table.item(r, 3).setText(_elapsed(job.elapsed) + _eta(job))
        msg = job.message
        self.table.item(r, 4).setText(msg)
        self.table.item(r, 4).setToolTip(msg)
        if job.state == "error":
            self.table.item(r, 4).setForeground(Qt.GlobalColor.red)
        bar = self.table.cellWidget(r, 2)
        if isinstance(bar, QProgressBar):
            if job.total:
                bar.setRange(0, job.total)
                bar.setValue(min(job.done, job.total))
            elif job.is_running:
                bar.setRange(0, 0)
            else:
                bar.setRange(0, 1)
                bar.setValue(1 if job.state == "done" else 0)
        button = self.table.cellWidget(r, 5)
        if isinstance(button, QPushButton):
            button.setEnabled(job.is_running)
        self._update_status_bar()

    def current_job(self) -> Job | None:
        """Return the newest running job."""
        return next((j for j in self._rows if j.is_running), None)

    def _update_status_bar(self) -> None:
        job = self.current_job()
        if job is None:
            self._status.hide()
            return
        self._status.show()
        self.status_text.setText(f"{job.title}: {job.last_status or 'working'}"
                                 f" · {_elapsed(job.elapsed)}{_eta(job)}")
        if job.total:
            self.status_bar_progress.setRange(0, job.total)
            self.status_bar_progress.setValue(min(job.done, job.total))
        else:
            self.status_bar_progress.setRange(0, 0)

    def _cancel_current(self) -> None:
        job = self.current_job()
        if job is not None:
            job.cancel()

    def _tick(self) -> None:
        for job in self._rows:
            if job.is_running:
                self._update(job)

    def jobs(self) -> list[Any]:
        """Return the listed jobs, newest first."""
        return list(self._rows)
