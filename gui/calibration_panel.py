"""The calibration panel: reliability diagrams before and after temperature scaling.

For the model whose predictions are shown, on its test split judged against the current
labels (:mod:`hemalens.engine.review.calibration_view`): per confidence family the
accuracy of each confidence bin before (light) and after (dark) calibration beside the
diagonal of perfect calibration, ECE and MCE of both, and the temperatures. "Spread"
draws each bin as a box over bootstrap resamples of the test cells (paper 1's box-plot
variant, which spreads over training runs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.workers import one_line_message


class CalibrationPanel(QWidget):
    """Reliability diagram of the shown model, one confidence family at a time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.summary: dict[str, Any] | None = None
        self.family = QComboBox(self)
        self.family.setToolTip("Which confidence: softmax, MC-dropout mean, median or std")
        self.spread = QCheckBox("Spread (bootstrap boxes)", self)
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.plot = pg.PlotWidget(self)
        self.plot.setBackground(None)
        self.plot.setLabel("bottom", "confidence")
        self.plot.setLabel("left", "accuracy")
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.addLegend(offset=(10, 10))
        top = QHBoxLayout()
        top.addWidget(QLabel("Measure:", self))
        top.addWidget(self.family)
        top.addWidget(self.spread)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.info)
        layout.addWidget(self.plot, 1)
        self.family.currentIndexChanged.connect(lambda _i: self._draw())
        self.spread.toggled.connect(lambda _b: self._draw())

    def set_session(self, session: Any) -> None:
        """Show the calibration of this session's model (None: nothing)."""
        self.session = session
        self.refresh()

    def refresh(self) -> None:
        """Recompute from the stored predictions and the current labels."""
        from hemalens.engine.project.model_index import model_names, model_split
        from hemalens.engine.review.calibration_view import calibration_summary

        self.summary = None
        s = self.session
        found = None if s is None else s.prediction_columns()
        if found is None:
            self.info.setText("No predictions yet: train a model and run Predict.")
            self._draw()
            return
        cols, attrs = found
        names = list(attrs.get("class_names") or s.classes)
        model = str(attrs.get("model", ""))
        to_model = np.asarray([names.index(c) if c in names else -1 for c in s.classes] + [-1])
        labels = to_model[np.asarray(s.labels, np.int64)]
        try:
            split = model_split(s.project, model) if model in model_names(s.project) else None
        except Exception as exc:  # a damaged model file: say so, show nothing wrong
            self.info.setText(f"Cannot read the model's split: {one_line_message(exc)}")
            self._draw()
            return
        cells = split["test"] if split is not None and split["test"].size else None
        where = "its test split"
        if cells is None:
            cells = np.flatnonzero(s.qc)
            where = "every labelled QC-passed cell (the model records no test split)"
        self.summary = calibration_summary(cols, labels, cells)
        cal = split["calibration"] if split is not None else {}
        t, t_mc = cal.get("temperature"), cal.get("mc_temperature")
        temps = ", ".join(f"{k} {v:.2f}" for k, v in (("T", t), ("T (MC)", t_mc))
                          if isinstance(v, (int, float)) and math.isfinite(v))
        self.info.setText(f"Model {model} on {where}: {self.summary['n']} cells judged against "
                          f"their current labels. {temps}")
        current = self.family.currentText()
        self.family.blockSignals(True)
        self.family.clear()
        self.family.addItems(list(self.summary["families"]))
        k = self.family.findText(current)
        self.family.setCurrentIndex(k if k >= 0 else 0)
        self.family.blockSignals(False)
        self._draw()

    def _draw(self) -> None:
        self.plot.clear()
        self.plot.plot([0, 1], [0, 1], pen=pg.mkPen((120, 120, 120), style=pg.QtCore.Qt
                                                    .PenStyle.DashLine), name="perfect")
        if not self.summary or self.family.currentText() not in self.summary["families"]:
            return
        entry = self.summary["families"][self.family.currentText()]
        width = 0.1
        for key, colour, offset, label in (("before", (86, 180, 233, 150), -0.022, "before"),
                                           ("after", (0, 114, 178, 220), 0.022, "calibrated")):
            rel = entry.get(key)
            if rel is None:
                continue
            centres = (rel["edges"][:-1] + rel["edges"][1:]) / 2 + offset
            acc = np.nan_to_num(rel["accuracy"], nan=0.0)
            ece = entry.get("ece" if key == "before" else "ece_ts", math.nan)
            mce = entry.get("mce" if key == "before" else "mce_ts", math.nan)
            name = f"{label}: ECE {ece:.3f}, MCE {mce:.3f}"
            if self.spread.isChecked() and key in entry.get("boxes", {}):
                self._boxes(entry["boxes"][key], centres, colour, name)
            else:
                self.plot.addItem(pg.BarGraphItem(x=centres, height=acc, width=width * 0.42,
                                                  brush=pg.mkBrush(*colour)))
                self.plot.plot([], [], pen=pg.mkPen(colour[:3], width=6), name=name)

    def _boxes(self, boxes: np.ndarray, centres: np.ndarray, colour: tuple, name: str) -> None:
        with np.errstate(all="ignore"):
            q1, med, q3 = np.nanpercentile(boxes, [25, 50, 75], axis=0)
            lo, hi = np.nanmin(boxes, axis=0), np.nanmax(boxes, axis=0)
        ok = np.isfinite(med)
        c, q1, med, q3, lo, hi = c_ = (centres[ok], q1[ok], med[ok], q3[ok], lo[ok], hi[ok])
        del c_
        self.plot.addItem(pg.BarGraphItem(x=c, y0=q1, height=q3 - q1, width=0.04,
                                          brush=pg.mkBrush(*colour)))
        self.plot.addItem(pg.ErrorBarItem(x=c, y=med, top=hi - med, bottom=med - lo, beam=0.02,
                                          pen=pg.mkPen(colour[:3])))
        self.plot.addItem(pg.ScatterPlotItem(x=c, y=med, symbol="_", size=14,
                                             pen=pg.mkPen("k", width=2)))
        self.plot.plot([], [], pen=pg.mkPen(colour[:3], width=6), name=name)

    def ece(self, family: str, calibrated: bool) -> float:
        """Return the ECE shown for a family (tests)."""
        assert self.summary is not None
        return float(self.summary["families"][family]["ece_ts" if calibrated else "ece"])
