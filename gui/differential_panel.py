"""The differential panel: counts and percentages per class per sample, live.

One row per sample: for every class its count and percentage with the Wilson 95 %
interval, then how many cells are left out and why (QC, excluded by the reviewer, out of
distribution, unclassified), how many the reviewer relabelled and decided, and whether
the sample is signed off. The numbers come from ``ReviewSession.differential`` (the
engine) and follow every edit: a relabel shows here within a fraction of a second.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QLabel,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.palette import class_colour
from hemalens.gui.tables import read_only_table

EXCLUDED = ("qc", "excluded", "ood", "unclassified")


def _swatch(colour: QColor) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(colour)
    return QIcon(pix)


def _pct(row: dict[str, Any]) -> str:
    p = row.get("percent", math.nan)
    if not math.isfinite(p):
        return "—"
    return f"{row['n']} · {p:.1f} % [{row['ci_low']:.1f}–{row['ci_high']:.1f}]"


class DifferentialPanel(QWidget):
    """A table of the session's differential count, one row per sample."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.note = QLabel("Counts with Wilson 95 % intervals. A cell counts under its label, "
                           "or its predicted class until it is reviewed.", self)
        self.note.setWordWrap(True)
        self.table = read_only_table(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)  # a burst of key presses recomputes once
        self._timer.timeout.connect(self.refresh)
        self.data: dict[str, dict[str, Any]] = {}

    def set_session(self, session: Any) -> None:
        """Show this session's differential (None: nothing)."""
        self.session = session
        self.refresh()

    def cells_changed(self, _ids: np.ndarray) -> None:
        """Labels or decisions changed: recompute soon."""
        self._timer.start()

    def refresh(self) -> None:
        """Recompute and show the differential."""
        s = self.session
        self.table.clear()
        if s is None:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            self.data = {}
            return
        self.data = s.differential()
        classes = list(s.classes)
        headers = ["Sample", "Counted", *classes, *(f"out: {r}" for r in EXCLUDED),
                   "Relabelled", "Decided", "Signed off"]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        for k, name in enumerate(classes):
            item = self.table.horizontalHeaderItem(2 + k)
            item.setIcon(_swatch(class_colour(k)))
            item.setToolTip(f"{name}: count · percent [95 % interval]")
        self.table.setRowCount(len(self.data))
        for r, (sample, row) in enumerate(self.data.items()):
            signed = s.signed.get(sample)
            values = [sample, str(row.get("_total", 0))]
            values += [_pct(row[c]) if c in row else "—" for c in classes]
            out = row.get("_excluded", {})
            values += [str(out.get(reason, 0)) for reason in EXCLUDED]
            values += [str(row.get("_changed", 0)), str(row.get("_decided", 0)),
                       f"{signed['user']} {signed['time'][:16].replace('T', ' ')}"
                       if signed else "no"]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if signed and c == len(values) - 1:
                    item.setForeground(QColor("#009E73"))
                self.table.setItem(r, c, item)

    def value(self, sample: str, column: str) -> str:
        """Return the text shown for a sample and a column header (tests, screenshots)."""
        headers = [self.table.horizontalHeaderItem(c).text()
                   for c in range(self.table.columnCount())]
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == sample:
                return self.table.item(r, headers.index(column)).text()
        raise KeyError(sample)
