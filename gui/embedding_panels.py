"""The side panels of the embedding view: PLI edits, automatic interventions, training runs.

They hold controls and show results; the :class:`~hemalens.gui.embedding_view.EmbeddingView`
owns the map, the jobs and the project writes, and connects to their buttons.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.tables import read_only_table

__all__ = ["EditsPanel", "InterventionPanel", "RunsPanel", "TrainingForm", "describe_edit"]

TYPE_NAMES = (("c", "contract"), ("s", "shift"), ("os", "ortho-shift"), ("r", "rotate"))
LOSSES = (("tml", "TML (triplet loss only)"), ("ali", "ALI (n-D interventions)"),
          ("pali", "PALI (2-D interventions)"))
RUN_COLUMNS = ("", "Run", "Loss", "Types", "α", "Weights", "PLI", "Epochs", "Test F1",
               "Created")


def _num(v: Any, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def describe_edit(edit: Any) -> str:
    """Return one line that says what a PLI edit does."""
    n = len(edit.cells)
    if edit.kind == "shift":
        dx, dy = edit.vector
        return f"Shift {n} cells by ({dx:.2f}, {dy:.2f})"
    if edit.kind == "contract":
        scale = 1.0 - edit.factor
        verb = "Contract" if scale < 1 else "Expand"
        return f"{verb} {n} cells to {scale:.0%} of their spread"
    return f"Rotate {n} cells by {math.degrees(edit.angle):.0f}°"


class TrainingForm(QWidget):
    """Epochs, folds, backbone and input size of an embedding training."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.epochs = QSpinBox(self)
        self.epochs.setRange(1, 500)
        self.epochs.setValue(30)
        self.folds = QSpinBox(self)
        self.folds.setRange(3, 10)
        self.folds.setValue(3)
        self.backbone = QComboBox(self)
        for key, text in (("small", "small CNN (fast on a CPU)"), ("resnet18", "ResNet-18"),
                          ("densenet121", "DenseNet-121 (paper 2)")):
            self.backbone.addItem(text, key)
        self.input_size = QSpinBox(self)
        self.input_size.setRange(16, 256)
        self.input_size.setValue(64)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Most epochs", self.epochs)
        form.addRow("Folds (regions never straddle)", self.folds)
        form.addRow("Backbone", self.backbone)
        form.addRow("Input size", self.input_size)

    def options(self) -> dict[str, Any]:
        """Return the chosen values as ``embed_train_project`` keywords."""
        return {"epochs": self.epochs.value(), "folds": self.folds.value(),
                "backbone": self.backbone.currentData(),
                "input_size": self.input_size.value()}


class EditsPanel(QWidget):
    """The manual (PLI) edits: tools, the list, remove, retrain."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.help = QLabel(
            "Select cells, choose the <b>Edit</b> tool, then drag to shift them, "
            "Shift+drag to rotate them about their centre, or turn the wheel to contract "
            "(up) or expand (down). Ctrl+Z undoes an edit.", self)
        self.help.setWordWrap(True)
        self.contract = QPushButton("Contract", self)
        self.expand = QPushButton("Expand", self)
        self.rotate_left = QPushButton("Rotate ⟲", self)
        self.rotate_right = QPushButton("Rotate ⟳", self)
        grid = QGridLayout()
        grid.addWidget(self.contract, 0, 0)
        grid.addWidget(self.expand, 0, 1)
        grid.addWidget(self.rotate_left, 1, 0)
        grid.addWidget(self.rotate_right, 1, 1)
        self.list = QListWidget(self)
        self.remove = QPushButton("Remove edit", self)
        self.clear = QPushButton("Remove all", self)
        self.form = TrainingForm(self)
        self.retrain = QPushButton("Retrain with my edits", self)
        self.retrain.setToolTip("Train an embedding network with the triplet loss plus the "
                                "edited positions as 2-D targets (paper 2, PLI)")
        row = QHBoxLayout()
        row.addWidget(self.remove)
        row.addWidget(self.clear)
        layout = QVBoxLayout(self)
        layout.addWidget(self.help)
        layout.addLayout(grid)
        layout.addWidget(QLabel("Edits (applied in order):", self))
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addWidget(self.form)
        layout.addWidget(self.retrain)

    def show_edits(self, edits: Any) -> None:
        """List the edits."""
        self.list.clear()
        for k, e in enumerate(edits):
            self.list.addItem(f"{k + 1}. {describe_edit(e)}")
        self.remove.setEnabled(bool(edits))
        self.clear.setEnabled(bool(edits))


class InterventionPanel(QWidget):
    """ALI / PALI: types, strengths, class weights, α; preview and retrain."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.types: dict[str, QCheckBox] = {}
        boxes = QHBoxLayout()
        for key, name in TYPE_NAMES:
            box = QCheckBox(name, self)
            box.setChecked(key in ("c", "s"))
            self.types[key] = box
            boxes.addWidget(box)
        self.loss = QComboBox(self)
        for key, text in LOSSES:
            self.loss.addItem(text, key)
        self.loss.setCurrentIndex(2)
        self.class_weights = QCheckBox("Class weights (rare classes count more)", self)
        self.alpha = QDoubleSpinBox(self)
        self.alpha.setRange(0.0, 1.0)
        self.alpha.setSingleStep(0.05)
        self.alpha.setSpecialValueText("default (0.8 ALI, 0.9 PALI)")
        self.alpha.setValue(0.0)
        self.lambda_c = QDoubleSpinBox(self)
        self.lambda_c.setRange(0.0, 0.95)
        self.lambda_c.setSingleStep(0.05)
        self.lambda_c.setValue(0.25)
        self.lambda_s = QDoubleSpinBox(self)
        self.lambda_s.setRange(0.0, 8.0)
        self.lambda_s.setValue(1.0)
        self.iterations = QSpinBox(self)
        self.iterations.setRange(1, 500)
        self.iterations.setValue(20)
        form = QFormLayout()
        form.addRow("Types", boxes)
        form.addRow("λ contract", self.lambda_c)
        form.addRow("λ shift (cluster std)", self.lambda_s)
        form.addRow("Preview iterations", self.iterations)
        form.addRow("Loss", self.loss)
        form.addRow("α (intervention weight)", self.alpha)
        form.addRow(self.class_weights)
        self.preview = QPushButton("Preview", self)
        self.stop = QPushButton("Stop", self)
        self.back = QPushButton("Back to the map", self)
        self.stop.setEnabled(False)
        self.back.setEnabled(False)
        self.state = QLabel("The preview moves the labelled cells of the map as the "
                            "interventions would, iteration by iteration, and scores an "
                            "SVM on the validation fold after each.", self)
        self.state.setWordWrap(True)
        self.curve = pg.PlotWidget(self)
        self.curve.setBackground(None)
        self.curve.setLabel("bottom", "iteration")
        self.curve.setLabel("left", "validation macro-F1")
        self.curve.setMinimumHeight(120)
        self.form = TrainingForm(self)
        self.retrain = QPushButton("Retrain", self)
        self.retrain.setToolTip("Train an embedding network with the chosen loss on the "
                                "project's region folds")
        row = QHBoxLayout()
        for b in (self.preview, self.stop, self.back):
            row.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.state)
        layout.addWidget(self.curve, 1)
        layout.addWidget(self.form)
        layout.addWidget(self.retrain)

    def chosen_types(self) -> tuple[str, ...]:
        """Return the ticked intervention types (canonical order)."""
        return tuple(k for k, _ in TYPE_NAMES if self.types[k].isChecked())

    def options(self) -> dict[str, Any]:
        """Return ``embed_train_project`` keywords for the chosen loss."""
        alpha = self.alpha.value()
        return {"loss": self.loss.currentData(), "types": self.chosen_types() or ("c",),
                "class_weights": self.class_weights.isChecked(),
                "alpha": alpha if alpha > 0 else None, **self.form.options()}

    def show_curve(self, f1: list[float]) -> None:
        """Draw the validation macro-F1 per iteration."""
        self.curve.clear()
        self.curve.plot(np.arange(len(f1)), f1, pen=pg.mkPen((0, 114, 178), width=2),
                        symbol="o", symbolSize=4)


class RunsPanel(QWidget):
    """Embedding training runs: live curves, the list, make active, before/after."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[dict[str, Any]] = []
        self.table = read_only_table(self, RUN_COLUMNS, select_rows=True, single=True)
        self.activate = QPushButton("Make active", self)
        self.cancel = QPushButton("Cancel training", self)
        self.cancel.setEnabled(False)
        self.state = QLabel("", self)
        self.state.setWordWrap(True)
        self.curves = pg.PlotWidget(self)
        self.curves.setBackground(None)
        self.curves.setLabel("bottom", "epoch")
        self.curves.addLegend(offset=(5, 5))
        self.curves.setMinimumHeight(140)
        self.before = pg.PlotWidget(self)
        self.after = pg.PlotWidget(self)
        for w, title in ((self.before, "before"), (self.after, "after")):
            w.setBackground("w")
            w.setTitle(title)
            w.hideAxis("left")
            w.hideAxis("bottom")
            w.setMinimumHeight(140)
        self.compare = QLabel("", self)
        self.compare.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.activate)
        row.addWidget(self.cancel)
        side = QHBoxLayout()
        side.addWidget(self.before)
        side.addWidget(self.after)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(self.state)
        layout.addWidget(self.curves, 1)
        layout.addLayout(side, 1)
        layout.addWidget(self.compare)
        self.epochs: list[dict[str, Any]] = []

    def show_runs(self, rows: list[dict[str, Any]], active: str | None) -> None:
        """List the runs (newest first)."""
        self.rows = list(reversed(rows))
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            f1 = f"{_num(row.get('mean_f1'))} ± {_num(row.get('std_f1'))}"
            texts = ["●" if row["name"] == active else "", row["name"],
                     str(row.get("loss") or "?").upper(), "+".join(row.get("types") or []),
                     _num(row.get("alpha"), ".2f"), "yes" if row.get("class_weights") else "",
                     "yes" if row.get("pli") else "", str(row.get("epochs") or ""), f1,
                     str(row.get("created", ""))[:16].replace("T", " ")]
            for c, text in enumerate(texts):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.activate.setEnabled(bool(self.rows))

    def selected(self) -> str | None:
        """Return the selected run's name."""
        sel = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[sel[0].row()]["name"] if sel else None

    def start(self, text: str) -> None:
        """Clear the curves for a training that begins."""
        self.epochs = []
        self.curves.clear()
        self.state.setText(text)
        self.cancel.setEnabled(True)

    def add_epoch(self, record: dict[str, Any]) -> None:
        """Grow the curves by one epoch record (``kind == "embed_epoch"``)."""
        self.epochs.append(record)
        self.curves.clear()
        folds = sorted({int(r.get("fold", 0)) for r in self.epochs})
        styles = (pg.QtCore.Qt.PenStyle.SolidLine, pg.QtCore.Qt.PenStyle.DashLine,
                  pg.QtCore.Qt.PenStyle.DotLine)
        for f in folds:
            rows = [r for r in self.epochs if int(r.get("fold", 0)) == f]
            e = [r["epoch"] for r in rows]
            style = styles[f % len(styles)]
            for key, colour, name in (("tml", (230, 159, 0), "triplet loss"),
                                      ("intervention", (204, 121, 167), "intervention loss"),
                                      ("val_f1", (0, 114, 178), "validation macro-F1")):
                pts = [(x, r[key]) for x, r in zip(e, rows, strict=True)
                       if r.get(key) is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                self.curves.plot(list(xs), list(ys), pen=pg.mkPen(colour, width=2, style=style),
                                 symbol="o" if key == "val_f1" else None, symbolSize=5,
                                 symbolBrush=colour, name=f"{name} · fold {f + 1}")
        last = self.epochs[-1]
        f1 = last.get("val_f1")
        self.state.setText(f"Fold {int(last.get('fold', 0)) + 1}, epoch {last['epoch']}: "
                           f"triplet loss {_num(last.get('tml'))}"
                           + (f", validation macro-F1 {f1:.3f}" if f1 is not None else ""))

    def show_comparison(self, result: dict[str, Any]) -> None:
        """Show the maps before and after a training side by side with their scores."""
        colours = result.get("colours")
        for w, key in ((self.before, "before"), (self.after, "after")):
            w.clear()
            xy, cat = result.get(f"{key}_xy"), result.get(f"{key}_cat")
            if xy is None or not len(xy):
                continue
            if cat is None or colours is None:
                w.addItem(pg.ScatterPlotItem(xy[:, 0], xy[:, 1], size=3, pen=None,
                                             brush=pg.mkBrush(0, 114, 178, 120)))
                continue
            for c, colour in enumerate(colours):  # one item per class: no per-point brushes
                rows = cat == c
                if rows.any():
                    w.addItem(pg.ScatterPlotItem(xy[rows, 0], xy[rows, 1], size=3, pen=None,
                                                 brush=pg.mkBrush(colour)))
        self.compare.setText(
            f"Test macro-F1: before {_num(result.get('before_f1'))}, after "
            f"{_num(result.get('after_f1'))}. {result.get('changed', 0):,} of "
            f"{result.get('compared', 0):,} cells changed neighbourhood (fewer than half "
            "of their 10 nearest neighbours kept).")
