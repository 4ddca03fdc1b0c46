"""The selected cell: a larger view of its patch, its explanation and a table of its features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.explanation_view import ExplanationView

#: Units of the cell-table columns (the column name suffixes say the same).
UNITS: dict[str, str] = {
    "x": "px", "y": "px", "bbox_x": "px", "bbox_y": "px", "bbox_w": "px", "bbox_h": "px",
    "pixel_count": "px", "area_um2": "µm²", "diameter_um": "µm", "optical_volume_um3": "µm³",
    "perimeter_um": "µm", "phase_mean": "rad", "phase_max": "rad", "phase_std": "rad",
}

#: Role of the value cell holding the unformatted value (numbers as float/int/bool).
RawValueRole = int(Qt.ItemDataRole.UserRole) + 1


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


class CellPanel(QWidget):
    """Patch view (raw phase in rad with a colour bar, else the stored image) and features.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Any = None
        self.cell: int = -1

        self.title = QLabel("No cell selected", self)
        self.graphics = pg.GraphicsLayoutWidget(self)
        self.plot = self.graphics.addPlot()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)  # row 0 at the top, as in the gallery
        self.plot.hideButtons()
        self.phase_item = pg.ImageItem()
        self.rgb_item = pg.ImageItem()
        self.plot.addItem(self.phase_item)
        self.plot.addItem(self.rgb_item)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), label="phase (rad)",
            interactive=False,
        )
        self.colorbar.setImageItem(self.phase_item, insert_in=self.plot)

        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["Feature", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)

        self.explanation = ExplanationView(self)  # the map over this patch

        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.graphics)
        splitter.addWidget(self.explanation)
        splitter.addWidget(self.table)
        splitter.setSizes([260, 200, 340])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        self._pred: tuple[dict[str, np.ndarray], list[str]] | None = None
        layout.addWidget(splitter, 1)
        self.clear()

    def set_project(self, project: Any) -> None:
        """Use ``project`` for later :meth:`show_cell` calls and clear the view."""
        self._project = project
        self._pred = None
        self.explanation.set_project(project)
        self.clear()

    def set_predictions(self, columns: dict[str, np.ndarray] | None,
                        class_names: list[str] | None = None) -> None:
        """Show these predictions (``hemalens predict`` columns) with each cell."""
        self._pred = None if columns is None else (columns, list(class_names or []))
        if self.cell >= 0:
            self.show_cell(self.cell)

    def clear(self) -> None:
        """Show nothing."""
        self.cell = -1
        self.title.setText("No cell selected")
        self.phase_item.clear()
        self.rgb_item.clear()
        self.colorbar.setVisible(False)
        self.table.setRowCount(0)
        self.explanation.clear_cell()

    def show_cell(self, i: int) -> None:
        """Show project row ``i`` (a negative row clears the panel)."""
        project = self._project
        if project is None or i < 0 or i >= project.n_cells:
            self.clear()
            return
        self.cell = int(i)
        cells = project.cells
        self.title.setText(f"Cell {int(cells['cell_id'][i])}")
        self._show_image(i)
        self._fill_table(self.feature_rows(i))
        if self.explanation.cell != self.cell:  # not on a prediction refresh of the same cell
            self.explanation.show_cell(self.cell)

    def _show_image(self, i: int) -> None:
        project = self._project
        raw = project.raw(i) if project.patch_kind == "phase" else None
        if raw is not None:
            self._show_phase(np.asarray(raw, dtype=np.float32), "phase (rad)")
        else:
            image = np.asarray(project.image(i))
            if image.ndim == 3:
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
        self.colorbar.getAxis("left").setLabel(label)  # where ColorBarItem puts its label
        self.colorbar.setVisible(True)

    def feature_rows(self, i: int) -> list[tuple[str, str, Any, str]]:
        """Rows of the features table for project row ``i``.

        Parameters
        ----------
        i : int
            Project row.

        Returns
        -------
        list of (name, text, raw value, description)
            The input file, label names and QC first, then every cell-table column.
        """
        # Imported here: the project package pulls in h5py, kept off the start-up path.
        from hemalens.engine.project.schema import CELL_COLUMNS

        project = self._project
        cells = project.cells
        rows: list[tuple[str, str, Any, str]] = []
        if "input_id" in cells and "file" in (project.inputs or {}):
            files = project.inputs["file"]
            k = int(cells["input_id"][i])
            name = _plain(files[k]) if 0 <= k < len(files) else ""
            rows.append(("file", str(name), str(name), "input file as given"))
        classes = list(project.classes)
        for col, desc in (("given_label", "current label"), ("original_label", "label at import")):
            if col in cells:
                code = int(cells[col][i])
                name = classes[code] if 0 <= code < len(classes) else ""
                rows.append((col, name or "none", name, desc))
        if self._pred is not None:
            rows += self._prediction_rows(i)
        if "qc_pass" in cells:
            passed = bool(cells["qc_pass"][i])
            reason = _plain(cells["qc_reason"][i]) if "qc_reason" in cells else ""
            text = "passed" if passed else f"rejected ({reason})" if reason else "rejected"
            rows.append(("QC", text, passed, "quality filter outcome"))
        names = [c for c in CELL_COLUMNS if c in cells] + sorted(set(cells) - set(CELL_COLUMNS))
        for col in names:
            if col in ("given_label", "original_label"):
                continue  # shown above as names
            value = cells[col][i]
            desc = CELL_COLUMNS[col][1] if col in CELL_COLUMNS else ""
            rows.append((col, format_value(value, UNITS.get(col, "")), _plain(value), desc))
        return rows

    def _prediction_rows(self, i: int) -> list[tuple[str, str, Any, str]]:
        """Predicted class, calibrated confidence, and each class's MC mean ± std."""
        assert self._pred is not None
        columns, names = self._pred
        code = int(columns["predicted"][i])
        name = names[code] if 0 <= code < len(names) else "?"
        conf = float(columns["confidence"][i])
        rows = [("predicted", name, name, "class of the calibrated prediction"),
                ("confidence", f"{conf:.1%}", conf, "calibrated confidence of that class")]
        if "mc_mean" in columns and "mc_std" in columns:
            for k, cls in enumerate(names):
                mean, std = float(columns["mc_mean"][i, k]), float(columns["mc_std"][i, k])
                rows.append((f"p({cls})", f"{mean:.3f} ± {std:.3f}", mean,
                             "MC-dropout mean ± standard deviation of the class probability"))
        return rows

    def _fill_table(self, rows: list[tuple[str, str, Any, str]]) -> None:
        self.table.setRowCount(len(rows))
        for r, (name, text, raw, desc) in enumerate(rows):
            key = QTableWidgetItem(name)
            key.setToolTip(desc)
            value = QTableWidgetItem(text)
            value.setData(RawValueRole, raw)
            value.setToolTip(desc)
            self.table.setItem(r, 0, key)
            self.table.setItem(r, 1, value)

    def value_of(self, name: str) -> Any:
        """Return the raw value shown for feature ``name`` (None when absent)."""
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            value = self.table.item(r, 1)
            if item is not None and value is not None and item.text() == name:
                return value.data(RawValueRole)
        return None
