"""The gallery panel: sort modes, the filter bar, the grid and the review-queue progress.

Every control writes to the review session (``set_order``, ``set_filter``); the grid is
rebuilt from ``session.visible()`` when the session says its view changed. Label and
decision edits repaint tiles in place instead of re-filtering, so a cell does not jump
away the moment it is decided; "Refresh" (F5) applies the filter again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from hemalens.engine.review.session import ORDERS, ReviewFilter
from hemalens.gui.gallery import DECISION_NAMES, GalleryData, GalleryGrid

#: Gallery modes shown to the user: (text, session order, queue-only filter).
MODES = (("Least certain first", "confidence", False),
         ("Grouped by predicted class", "class", False),
         ("Review queue", "queue", True),
         ("By cell id", "id", False))


def _combo(parent: QWidget, items: list[tuple[str, Any]], tip: str) -> QComboBox:
    box = QComboBox(parent)
    # shrink with the window instead of holding the gallery wide
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(7)
    for text, data in items:
        box.addItem(text, data)
    box.setToolTip(tip)
    return box


class GalleryPanel(QWidget):
    """Filter bar, grid and counts over a review session.

    Signals
    -------
    cellSelected(int)
        The current cell changed (-1: none).
    """

    cellSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 64) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.data = GalleryData(thumb_size=thumb_size)
        self.grid = GalleryGrid(self.data, self)
        self.grid.setToolTip("")
        self._updating = False

        self.mode_combo = _combo(self, [(t, k) for k, (t, _, _) in enumerate(MODES)],
                                 "How the cells are ordered")
        self.sample_combo = _combo(self, [], "Show the cells of one sample")
        self.given_combo = _combo(self, [], "Filter by the current (given) label")
        self.pred_combo = _combo(self, [], "Filter by the predicted class")
        self.decision_combo = _combo(self, [("Any decision", None)] + [
            (d.capitalize(), k) for k, d in enumerate(DECISION_NAMES)], "Filter by decision")
        self.qc_combo = _combo(self, [("QC passed", True), ("QC rejected", False),
                                      ("All objects", None)], "Quality-control outcome")
        self.flag_combo = _combo(self, [("Any flag", None), ("≠ disputed", "disputed"),
                                        ("Not disputed", "agreed"), ("OOD", "ood"),
                                        ("In distribution", "in")],
                                 "≠: the confident prediction disputes the label; "
                                 "OOD: out of distribution")
        self.conf_lo = QDoubleSpinBox(self)
        self.conf_hi = QDoubleSpinBox(self)
        for box, value in ((self.conf_lo, 0.0), (self.conf_hi, 100.0)):
            box.setRange(0.0, 100.0)
            box.setDecimals(0)
            box.setSuffix(" %")
            box.setValue(value)
            box.setToolTip("Calibrated confidence range")
            box.setPrefix("≥ " if box is self.conf_lo else "≤ ")
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Cell id…")
        self.search.setClearButtonEnabled(True)
        self.search.setMaximumWidth(110)
        self.search.setMinimumWidth(60)
        self.search.setToolTip("Show one cell by its id (Enter); clear to show all again")
        self.display_combo = _combo(self, [("Fixed scale", "fixed"), ("Auto-contrast", "auto")],
                                    "Thumbnail brightness: the stored 0-1 scale (compares "
                                    "cells) or each patch stretched (dark objects visible)")
        self.refresh_button = QToolButton(self)
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Apply the filter again (F5)")
        self.count_label = QLabel(self)
        self.queue_label = QLabel(self)
        self.signoff_button = QPushButton("Sign off…", self)
        self.signoff_button.setToolTip("Sign the chosen sample off (every queued cell "
                                       "decided, no cell unsure, every cell labelled)")

        row1 = QHBoxLayout()
        for w in (self.mode_combo, self.sample_combo, self.given_combo,
                  self.pred_combo, self.decision_combo):
            row1.addWidget(w, 1)
        row1.addWidget(self.queue_label)
        row1.addWidget(self.signoff_button)
        row2 = QHBoxLayout()
        for w in (self.qc_combo, self.flag_combo, self.conf_lo, QLabel("–", self),
                  self.conf_hi, self.search, self.display_combo, self.refresh_button):
            row2.addWidget(w)
        row2.addStretch(1)
        row2.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.grid, 1)

        for box in (self.mode_combo, self.sample_combo, self.given_combo, self.pred_combo,
                    self.decision_combo, self.qc_combo, self.flag_combo):
            box.currentIndexChanged.connect(self._controls_changed)
        for spin in (self.conf_lo, self.conf_hi):
            spin.editingFinished.connect(self._controls_changed)
        self.search.returnPressed.connect(self._controls_changed)
        self.search.textChanged.connect(lambda t: t or self._controls_changed())
        self.display_combo.currentIndexChanged.connect(self._display_changed)
        self.refresh_button.clicked.connect(self.refresh)
        self.grid.currentChanged.connect(self.cellSelected)
        self.grid.selectionRequested.connect(self._selection_requested)
        self.set_session(None)

    # -- session ---------------------------------------------------------------------------
    def set_session(self, session: Any) -> None:
        """Show a review session (None: nothing); the filters are reset."""
        self.session = session
        self.data.set_session(session)
        self._fill_combos()
        for w in (self.mode_combo, self.sample_combo, self.given_combo, self.pred_combo,
                  self.decision_combo, self.qc_combo, self.flag_combo, self.conf_lo,
                  self.conf_hi, self.search, self.display_combo, self.signoff_button):
            w.setEnabled(session is not None)
        if session is None:
            self.grid.set_segments([], 0)
            self._update_labels()
            return
        self._updating = True
        self.mode_combo.setCurrentIndex(0 if session.has_predictions else 3)
        self._updating = False
        self._controls_changed()

    def _fill_combos(self) -> None:
        s = self.session
        self._updating = True
        classes = list(s.classes) if s is not None else []
        pred_names = list(s._predictions.names) if s is not None and s.has_predictions else []
        for box, first, extra, names in (
            (self.sample_combo, ("All samples", None), [],
             [(x, x) for x in (s.sample_list if s is not None else [])]),
            (self.given_combo, ("Any label", None), [("No label", -1)],
             [(c, k) for k, c in enumerate(classes)]),
            (self.pred_combo, ("Any prediction", None), [("No prediction", -1)],
             [(c, classes.index(c) if c in classes else -2) for c in pred_names]),
        ):
            current = box.currentData()
            box.clear()
            box.addItem(*first)
            for text, data in names + extra:
                box.addItem(text, data)
            k = box.findData(current)
            box.setCurrentIndex(k if k >= 0 else 0)
        self._updating = False

    def classes_changed(self) -> None:
        """Follow a change of the project's classes (a new class was added)."""
        self._fill_combos()

    # -- controls -> session ---------------------------------------------------------------
    def current_filter(self) -> tuple[str, ReviewFilter]:
        """Return the order and filter the controls describe."""
        _, order, queue = MODES[int(self.mode_combo.currentData() or 0)]
        flag = self.flag_combo.currentData()
        lo, hi = self.conf_lo.value() / 100.0, self.conf_hi.value() / 100.0
        sample = self.sample_combo.currentData()
        given = self.given_combo.currentData()
        pred = self.pred_combo.currentData()
        decision = self.decision_combo.currentData()
        text = self.search.text().strip()
        cell_id = int(text) if text.isdigit() else None
        return order, ReviewFilter(
            samples=None if sample is None else frozenset({sample}),
            given=None if given is None else frozenset({int(given)}),
            predicted=None if pred is None else frozenset({int(pred)}),
            confidence=None if (lo, hi) == (0.0, 1.0) else (lo, hi),
            decisions=None if decision is None else frozenset({int(decision)}),
            qc=self.qc_combo.currentData(),
            ood={"ood": True, "in": False}.get(flag),
            disputed={"disputed": True, "agreed": False}.get(flag),
            queue=queue,
            cell_id=cell_id,
        )

    def _controls_changed(self, *_args: Any) -> None:
        if self._updating or self.session is None:
            return
        order, flt = self.current_filter()
        if order not in ORDERS:
            return
        self.session.set_order(order, source=self)
        self.session.set_filter(flt, source=self)
        self.refresh()

    def _display_changed(self) -> None:
        self.data.set_display(self.display_combo.currentData())
        self.grid.viewport().update()

    def refresh(self) -> None:
        """Rebuild the grid from the session's filter and order (keeps the current cell)."""
        s = self.session
        if s is None:
            return
        s.refresh_view(source=self)  # the filter applied to the labels as they are now
        vis = s.visible()
        if s.order == "class" and s.filter.cell_id is None:
            segments = []
            start = 0
            names = s.classes
            for code, count in s.group_counts():
                name = names[code] if 0 <= code < len(names) else "no prediction"
                segments.append((f"{name} — {count:,} cells", vis[start:start + count]))
                start += count
        else:
            segments = [(None, vis)]
        self.grid.set_segments(segments, s.n_cells)
        self.grid.set_selection_mask(self._selection_mask())
        if self.grid.current < 0 and vis.size:
            self.grid.set_current(0)
        else:
            self.cellSelected.emit(self.grid.current_cell)
        self._update_labels()

    def _selection_mask(self) -> np.ndarray:
        s = self.session
        mask = np.zeros(s.n_cells, bool)
        mask[s.selection] = True
        return mask

    def _selection_requested(self, cells: np.ndarray, current: int) -> None:
        if self.session is not None:
            self.session.select(cells, current=current if current >= 0 else None, source=self)

    # -- session -> view -------------------------------------------------------------------
    def selection_changed(self, ids: Any, source: Any) -> None:
        """Follow a change of the session's selection (here or in another view)."""
        if self.session is None:
            return
        self.grid.set_selection_mask(self._selection_mask())
        cur = self.session.current
        if source is not self and cur is not None and cur != self.grid.current_cell:
            self.grid.select_cell(int(cur))

    def cells_changed(self, ids: np.ndarray) -> None:
        """Labels or decisions of these cells changed: repaint their tiles and counts."""
        self.grid.update_cells(ids)
        self._update_labels()

    def _update_labels(self) -> None:
        s = self.session
        if s is None:
            self.count_label.setText("")
            self.queue_label.setText("")
            return
        total = int(s.n_cells)
        self.count_label.setText(f"{self.grid.order.size:,} of {total:,} objects")
        sample = self.sample_combo.currentData()
        decided, queued = s.queue_progress(sample)
        where = f" in {sample}" if sample else ""
        self.queue_label.setText(f"Review queue{where}: {decided} of {queued} decided"
                                 if queued else "Review queue: empty")

    # -- helpers for the window ------------------------------------------------------------
    def targets(self) -> np.ndarray:
        """Return the cells a key acts on.

        The selection when it holds the current cell, else the current cell alone.
        """
        s = self.session
        if s is None:
            return np.zeros(0, np.int64)
        cur = self.grid.current_cell
        if s.selection.size > 1 and cur in set(s.selection.tolist()):
            return s.selection
        return np.asarray([cur] if cur >= 0 else [], np.int64)

    def advance(self, after: np.ndarray) -> None:
        """Move to the cell after the last of ``after`` in display order."""
        if not len(after):
            return
        pos = max(self.grid.position_of(int(c)) for c in after)
        nxt = min(pos + 1, self.grid.order.size - 1)
        if nxt >= 0:
            self.grid.set_current(nxt)
            self._selection_requested(np.asarray([self.grid.current_cell]),
                                      self.grid.current_cell)

    def keyPressEvent(self, event: Any) -> None:  # noqa: N802, D102
        if event.key() == Qt.Key.Key_F5:
            self.refresh()
            return
        super().keyPressEvent(event)
