"""The cell in its source frame.

The frame is re-read and re-segmented on demand, the cell's
contour drawn, zoomed to its neighbourhood. Loaded in the background (the latest request
wins); a missing or unreadable source file is said in one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from hemalens.gui.workers import Job, one_line_message, start_job


def context_job(project: str, cell: int, progress: Any = None) -> dict[str, Any]:
    """Find the cell in its frame (in the worker)."""
    from hemalens.engine.preview import cell_context

    out = cell_context(project, cell)
    out["cell"] = cell
    return out


class ContextView(QWidget):
    """The source frame around the shown cell, with its contour."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.cell = -1
        self.shown = -1
        self.job: Job | None = None
        self._wanted = -1
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.view = pg.GraphicsLayoutWidget(self)
        self.plot = self.view.addPlot()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideButtons()
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.contour = pg.PlotDataItem(pen=pg.mkPen((230, 159, 0), width=2))
        self.box = pg.PlotDataItem(pen=pg.mkPen((86, 180, 233), width=1, style=pg.QtCore.Qt
                                                .PenStyle.DashLine))
        self.plot.addItem(self.contour)
        self.plot.addItem(self.box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addWidget(self.view, 1)

    def set_session(self, session: Any) -> None:
        """Bind to a session."""
        self.session = session
        self.show_cell(-1)

    def show_cell(self, cell: int) -> None:
        """Show ``cell`` in its frame (loaded in the background; -1 clears)."""
        self.cell = cell
        if cell < 0 or self.session is None:
            self.image.clear()
            self.contour.setData([], [])
            self.box.setData([], [])
            self.status.setText("")
            self.shown = -1
            return
        if cell == self.shown:
            return
        self._wanted = cell
        if self.job is not None and self.job.is_running:
            return  # the newest request starts when this one ends
        self.status.setText(f"Reading the frame of cell {cell}…")
        self.job = start_job(context_job, str(self.session.project.path), cell,
                             title="Reading a cell's frame", parent=self, show_dialog=False,
                             show_errors=False, transient=True, on_result=self._loaded,
                             on_error=self._failed)
        self.job.ended.connect(self._next)

    def _next(self, _state: str) -> None:
        if self._wanted != self.shown and self._wanted == self.cell:
            self.show_cell(self._wanted)

    def _failed(self, exc: BaseException) -> None:
        self.shown = self._wanted
        self.image.clear()
        self.contour.setData([], [])
        self.box.setData([], [])
        self.status.setText(f"Cannot show the frame: {one_line_message(exc)}")

    def _loaded(self, result: dict[str, Any]) -> None:
        cell = int(result["cell"])
        self.shown = cell
        if cell != self.cell:
            return
        frame = np.asarray(result["frame"])
        if frame.ndim == 3:
            self.image.setImage(frame, autoLevels=False, levels=(0, 255))
        else:
            finite = frame[np.isfinite(frame)]
            lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
            self.image.setImage(np.nan_to_num(frame), levels=(float(lo), float(max(hi, lo + 1e-6))))
        x, y, w, h = result["bbox"]
        self.box.setData([x, x + w, x + w, x, x], [y, y, y + h, y + h, y])
        contour = result.get("contour")
        if contour is not None and len(contour):
            c = np.vstack([contour, contour[:1]])
            self.contour.setData(c[:, 0], c[:, 1])
            found = "contour found again"
        else:
            self.contour.setData([], [])
            found = "contour not found again (its box is dashed)"
        margin = max(w, h) * 2
        self.plot.setRange(xRange=(x - margin, x + w + margin),
                           yRange=(y - margin, y + h + margin), padding=0)
        self.status.setText(f"Cell {cell} in {result['file']}, frame {result['index']}: {found}")
