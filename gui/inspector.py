"""The inspector: everything about the current cell, read from the review session.

Top: the cell's patch (raw phase in rad with a colour bar, or the stained crop) and its
class probabilities as bars of the MC-dropout mean with the spread (mean ± standard
deviation as whiskers, the renormalised median as a tick). Below, in tabs: the
explanation overlay, the cell in its source frame with its contour (read on demand in
the background), the confidence under every measure with the features, and the cell's
label and decision history.

Every panel shows the selected cell or says plainly that it could not be read: a damaged
patch is a placeholder with the one-line reason here and in the status bar, never another
cell's image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.context_view import ContextView
from hemalens.gui.explanation_view import ExplanationView
from hemalens.gui.gallery import DECISION_NAMES
from hemalens.gui.palette import DECISION_MARKS, class_colour
from hemalens.gui.tables import read_only_table

#: Units of the cell-table columns.
UNITS: dict[str, str] = {
    "x": "px", "y": "px", "bbox_x": "px", "bbox_y": "px", "bbox_w": "px", "bbox_h": "px",
    "pixel_count": "px", "area_um2": "µm²", "diameter_um": "µm", "optical_volume_um3": "µm³",
    "perimeter_um": "µm", "phase_mean": "rad", "phase_max": "rad", "phase_std": "rad",
}
#: Role of the value cell holding the unformatted value.
RawValueRole = int(Qt.ItemDataRole.UserRole) + 1
#: The confidence measures, in the order the inspector lists them.
MEASURE_TEXT = {
    "freq": "softmax", "freq_ts": "softmax, temperature-scaled",
    "mc_mean": "MC mean", "mc_mean_ts": "MC mean, temperature-scaled",
    "mc_median": "MC median (renormalised)", "mc_std": "MC std (isotonic, calibrated)",
    "mc_logit_std": "MC logit std (OOD score, not a probability)",
}


def format_value(value: Any, unit: str = "") -> str:
    """Format one cell-table value for display, with its unit.

    Parameters
    ----------
    value : Any
        A numpy scalar, number, bool, bytes or str.
    unit : str
        Appended after a space when not empty.

    Returns
    -------
    str
        e.g. ``"8.31 µm"``, ``"yes"``, ``"—"`` for NaN.
    """
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, np.integer | int):
        text = f"{int(value):,}"
    elif isinstance(value, np.floating | float):
        if not math.isfinite(float(value)):
            return "—"
        text = f"{float(value):.4g}"
    else:
        return str(value)
    return f"{text} {unit}" if unit else text


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _table(parent: QWidget, headers: list[str]) -> QTableWidget:
    t = read_only_table(parent, headers, select_rows=True)
    t.verticalHeader().setDefaultSectionSize(parent.fontMetrics().height() + 6)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        *texts, raw, tip = row
        for c, text in enumerate(texts):
            item = QTableWidgetItem(str(text))
            item.setToolTip(tip)
            if c == len(texts) - 1:
                item.setData(RawValueRole, raw)
            table.setItem(r, c, item)


class Inspector(QWidget):
    """The current cell's patch, probabilities, explanation, context, measures and history.

    Signals
    -------
    problem(str)
        A one-line problem to show in the status bar (an unreadable patch).
    """

    problem = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.cell = -1

        self.title = QLabel("No cell selected", self)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.message = QLabel("", self)
        self.message.setStyleSheet("color: #D55E00")
        self.message.setWordWrap(True)
        self.message.hide()

        self.graphics = pg.GraphicsLayoutWidget(self)
        self.plot = self.graphics.addPlot(row=0, col=0)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideButtons()
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.phase_item = pg.ImageItem()
        self.rgb_item = pg.ImageItem()
        self.plot.addItem(self.phase_item)
        self.plot.addItem(self.rgb_item)
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"),
                                        label="phase (rad)", interactive=False)
        self.colorbar.setImageItem(self.phase_item, insert_in=self.plot)

        self.probs = pg.PlotWidget(self)
        self.probs.setBackground(None)
        self.probs.setMouseEnabled(False, False)
        self.probs.hideButtons()
        self.probs.setYRange(0, 1, padding=0.02)
        self.probs.getPlotItem().setLabel("left", "p(class)")
        self.probs.setToolTip("MC-dropout mean probability per class; whiskers: ± one "
                              "standard deviation over the passes; tick: median")

        top = QSplitter(Qt.Orientation.Horizontal, self)
        top.addWidget(self.graphics)
        top.addWidget(self.probs)
        top.setSizes([240, 260])

        self.explanation = ExplanationView(self)
        self.context = ContextView(self)
        self.measures = _table(self, ["Measure", "Value"])
        self.features = _table(self, ["Feature", "Value"])
        self.history = _table(self, ["When", "Who", "What", "Change"])
        facts = QSplitter(Qt.Orientation.Vertical, self)
        facts.addWidget(self.measures)
        facts.addWidget(self.features)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.explanation, "Explanation")
        self.tabs.addTab(self.context, "In its frame")
        self.tabs.addTab(facts, "Measures && features")
        self.tabs.addTab(self.history, "History")
        self.tabs.currentChanged.connect(lambda _i: self._load_tab())

        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(top)
        split.addWidget(self.tabs)
        split.setSizes([260, 420])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.message)
        layout.addWidget(split, 1)
        self.clear()

    # -- session -------------------------------------------------------------------------
    def set_session(self, session: Any) -> None:
        """Inspect cells of this session (None: nothing)."""
        self.session = session
        self.explanation.set_project(session.project if session is not None else None)
        self.context.set_session(session)
        self.clear()

    def clear(self) -> None:
        """Show nothing."""
        self.cell = -1
        self.title.setText("No cell selected")
        self.message.hide()
        self.phase_item.clear()
        self.rgb_item.clear()
        self.colorbar.setVisible(False)
        self.probs.clear()
        for t in (self.measures, self.features, self.history):
            t.setRowCount(0)
        self.explanation.clear_cell()
        self.context.show_cell(-1)

    def show_cell(self, i: int) -> None:
        """Show cell ``i`` (negative: nothing)."""
        s = self.session
        if s is None or i < 0 or i >= s.n_cells:
            self.clear()
            return
        self.cell = int(i)
        self.message.hide()
        self._show_title(i)
        self._show_image(i)
        self._show_probabilities(i)
        self._load_tab()

    def refresh(self) -> None:
        """Show the current cell again (its label, decision or predictions changed)."""
        if self.cell >= 0:
            keep = self.cell
            self._show_title(keep)
            self._show_probabilities(keep)
            self._load_tab(force=True)

    def _load_tab(self, force: bool = False) -> None:
        """Fill the visible tab only: the others load when they are shown."""
        i = self.cell
        if i < 0:
            return
        w = self.tabs.currentWidget()
        if w is self.explanation:
            if force or self.explanation.cell != i:
                self.explanation.show_cell(i)
        elif w is self.context:
            self.context.show_cell(i)
        elif w is self.history:
            self._fill_history(i)
        else:
            _fill(self.measures, self.measure_rows(i))
            _fill(self.features, self.feature_rows(i))

    # -- parts -----------------------------------------------------------------------------
    def _show_title(self, i: int) -> None:
        s = self.session
        label = s.classes[int(s.labels[i])] if s.labels[i] >= 0 else "no label"
        name = str(s.predicted_names[i])
        conf = float(s.confidence[i])
        decision = DECISION_NAMES[int(s.decisions[i])]
        symbol, colour, words = DECISION_MARKS[decision]
        pred = (f" · predicted <b>{name}</b> {conf:.1%}" if name and math.isfinite(conf)
                else "")
        flags = ""
        if s.is_disputed(i):
            flags += " · <span style='color:#D55E00'>≠ disputes the label</span>"
        if s.ood[i]:
            flags += " · <span style='color:#B8860B'>OOD</span>"
        qc = "" if s.qc[i] else " · <span style='color:#C82828'>QC rejected</span>"
        self.title.setText(
            f"<b>Cell {i}</b> · label <b>{label}</b>{pred}{flags}{qc} · "
            f"<span style='color:{colour}'>{symbol} {words}</span>")

    def _show_image(self, i: int) -> None:
        project = self.session.project
        try:
            raw = project.raw(i) if project.patch_kind == "phase" else None
            image = None if raw is not None else np.asarray(project.image(i))
        except Exception as exc:  # the panel says so; it never shows another cell
            text = f"Cell {i}: the patch cannot be read — {' '.join(str(exc).split())}"
            self.message.setText(text)
            self.message.show()
            self.phase_item.clear()
            self.rgb_item.clear()
            self.colorbar.setVisible(False)
            self.problem.emit(text)
            return
        if raw is not None:
            self._show_phase(np.asarray(raw, np.float32), "phase (rad)")
        elif image.ndim == 3:
            self.phase_item.clear()
            self.colorbar.setVisible(False)
            self.rgb_item.setImage(image, autoLevels=False, levels=(0, 255))
        else:
            self._show_phase(image.astype(np.float32), "normalised phase")
        self.plot.autoRange(padding=0)

    def _show_phase(self, image: np.ndarray, label: str) -> None:
        self.rgb_item.clear()
        finite = image[np.isfinite(image)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        self.phase_item.setImage(image, autoLevels=False)
        self.colorbar.setLevels((lo, hi))
        self.colorbar.getAxis("left").setLabel(label)
        self.colorbar.setVisible(True)

    def _show_probabilities(self, i: int) -> None:
        self.probs.clear()
        found = self.session.prediction_columns()
        if found is None:
            self.probs.setTitle("no predictions yet")
            return
        cols, attrs = found
        names = list(attrs.get("class_names") or self.session.classes)
        mean = cols.get("mc_mean")
        if mean is None or mean.ndim != 2 or mean.shape[1] != len(names):
            mean = cols.get("probs")
        if mean is None or mean.ndim != 2:
            self.probs.setTitle("no class probabilities stored")
            return
        m = mean[i].astype(float)
        std = cols["mc_std"][i].astype(float) if "mc_std" in cols else np.zeros_like(m)
        med = cols["mc_median"][i].astype(float) if "mc_median" in cols else None
        x = np.arange(len(names))
        project_codes = [self.session.classes.index(n) if n in self.session.classes else -1
                         for n in names]
        brushes = [class_colour(c) for c in project_codes]
        self.probs.addItem(pg.BarGraphItem(x=x, height=m, width=0.6, brushes=brushes))
        self.probs.addItem(pg.ErrorBarItem(x=x, y=m, top=std, bottom=np.minimum(std, m),
                                           beam=0.25, pen=pg.mkPen("k", width=1.5)))
        if med is not None:
            self.probs.addItem(pg.ScatterPlotItem(x=x, y=med, symbol="_", size=18,
                                                  pen=pg.mkPen("k", width=2)))
        axis = self.probs.getPlotItem().getAxis("bottom")
        axis.setTicks([[(k, n[:10]) for k, n in enumerate(names)]])
        self.probs.setTitle(f"{attrs.get('model', '')}: MC-dropout mean ± std")
        self.probs.setYRange(0, 1, padding=0.02)

    def measure_rows(self, i: int) -> list[tuple[str, str, Any, str]]:
        """Rows of the measures table: every stored confidence of the cell."""
        found = self.session.prediction_columns()
        if found is None:
            return [("no predictions", "run Predict first", None, "")]
        cols, attrs = found
        rows = [("shown measure", str(attrs.get("measure", "")), attrs.get("measure"),
                 "the measure behind the class and confidence in the gallery")]
        for key in sorted(c for c in cols if c.startswith("conf_")):
            name = key[5:]
            v = float(cols[key][i])
            rows.append((MEASURE_TEXT.get(name, name), "—" if not math.isfinite(v)
                         else f"{v:.3f}", v, f"stored column {key}"))
        for key in ("ood_score", "ood"):
            if key in cols:
                v = cols[key][i]
                rows.append((key, format_value(v), _plain(v), "out-of-distribution detector"))
        return rows

    def feature_rows(self, i: int) -> list[tuple[str, str, Any, str]]:
        """Rows of the features table: input file, labels, QC, then every cell column."""
        from hemalens.engine.project.schema import CELL_COLUMNS

        s = self.session
        project = s.project
        cells = project.cells
        rows: list[tuple[str, str, Any, str]] = []
        files = project.inputs.get("file", [])
        k = int(cells["input_id"][i])
        name = _plain(files[k]) if 0 <= k < len(files) else ""
        rows.append(("file", str(name), str(name), "input file as given"))
        rows.append(("sample", str(s.samples[i]), str(s.samples[i]), "the sample (run)"))
        for col, desc in (("given_label", "current label"), ("original_label", "label at import")):
            code = int(cells[col][i])
            label = s.classes[code] if 0 <= code < len(s.classes) else ""
            rows.append((col, label or "none", label, desc))
        passed = bool(cells["qc_pass"][i])
        reason = _plain(cells["qc_reason"][i])
        rows.append(("QC", "passed" if passed else f"rejected ({reason})", passed,
                     "quality filter outcome"))
        for col in [c for c in CELL_COLUMNS if c in cells] + sorted(set(cells) - set(CELL_COLUMNS)):
            if col in ("given_label", "original_label", "qc_pass", "qc_reason"):
                continue
            value = cells[col][i]
            desc = CELL_COLUMNS[col][1] if col in CELL_COLUMNS else ""
            rows.append((col, format_value(value, UNITS.get(col, "")), _plain(value), desc))
        return rows

    def _fill_history(self, i: int) -> None:
        h = self.session.store.history(i)
        classes = self.session.classes
        rows = []
        for k in range(h["cell_id"].size - 1, -1, -1):  # newest first
            field, old, new = str(h["field"][k]), int(h["old"][k]), int(h["new"][k])
            if field == "label":
                def name(c: int) -> str:
                    return classes[c] if 0 <= c < len(classes) else "none"
                change = f"label {name(old)} → {name(new)}"
            else:
                change = f"{DECISION_NAMES[old]} → {DECISION_NAMES[new]}"
            reason = str(h["reason"][k])
            rows.append((str(h["time"][k])[:19].replace("T", " "), str(h["user"][k]),
                         str(h["op"][k]), change, change, reason))
        if not rows:
            rows = [("", "", "", "no edits yet", "", "")]
        _fill(self.history, rows)

    def value_of(self, name: str) -> Any:
        """Return the raw value shown for ``name`` in the measures or features table."""
        for table in (self.measures, self.features):
            for r in range(table.rowCount()):
                key, value = table.item(r, 0), table.item(r, 1)
                if key is not None and value is not None and key.text() == name:
                    return value.data(RawValueRole)
        return None
