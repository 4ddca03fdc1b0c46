"""The cell gallery: a virtualised Qt list model over a project's cells and its icon view.

The model holds only an index array (the filtered, sorted cell rows); thumbnails are read
from the project one at a time when the view asks for a visible row and kept in an LRU
cache, so 100k cells cost an int64 array and nothing per cell until it is on screen.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

#: Role giving the project row (cell index) of a gallery item.
CellRowRole = int(Qt.ItemDataRole.UserRole) + 1
#: Role giving whether the cell passed QC.
QcPassRole = int(Qt.ItemDataRole.UserRole) + 2

REJECTED_COLOUR = QColor(200, 40, 40)

#: Typical QC captions (schema.QC_REASONS, not imported: that package pulls in h5py).
QC_CAPTIONS = ("nan", "border", "too_small", "too_large", "not_round")

#: A sort key maps the cell table to one orderable value per cell (ascending = first).
SortKey = Callable[[Mapping[str, np.ndarray]], np.ndarray]

_Index = QModelIndex | QPersistentModelIndex


class GalleryProject(Protocol):
    """What the gallery needs from a project (``hemalens.engine.project.Project``)."""

    n_cells: int
    patch_kind: str
    classes: list[str]
    cells: dict[str, np.ndarray]

    def image(self, i: int) -> np.ndarray:  # noqa: D102
        ...


def qc_first_sort_key(cells: Mapping[str, np.ndarray]) -> np.ndarray:
    """Order QC-passed cells first, then (by the stable sort) by cell id.

    Parameters
    ----------
    cells : mapping of str to numpy.ndarray
        The cell table (needs ``qc_pass``).

    Returns
    -------
    numpy.ndarray
        0 for passed cells, 1 for rejected ones.

    Notes
    -----
    This is the seam for later ordering (e.g. ascending calibrated confidence): any
    function of the cell table returning one key per cell can be passed as ``sort_key``.
    """
    return (~np.asarray(cells["qc_pass"], dtype=bool)).astype(np.int8)


def least_certain_first(confidence: np.ndarray) -> SortKey:
    """Sort key: QC-passed cells first, each group by ascending calibrated confidence.

    Parameters
    ----------
    confidence : numpy.ndarray
        ``(n_cells,)`` calibrated confidence of the shown prediction (NaN sorts last).

    Returns
    -------
    callable
        A ``sort_key`` for :class:`GalleryModel`.
    """
    conf = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=1.0)

    def key(cells: Mapping[str, np.ndarray]) -> np.ndarray:
        return qc_first_sort_key(cells) * 2.0 + conf

    return key


def patch_to_qimage(patch: np.ndarray) -> QImage:
    """Convert a project patch to a QImage that owns its memory.

    Parameters
    ----------
    patch : numpy.ndarray
        Phase patch (S, S) float in [0, 1], mapped with the fixed range 0 -> black and
        1 -> white (so brightness compares between cells), or RGB (S, S, 3) uint8.

    Returns
    -------
    QImage
        Grayscale8 or RGB888 image.
    """
    if patch.ndim == 2:
        grey = np.clip(np.nan_to_num(patch, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        grey = np.ascontiguousarray(grey)
        h, w = grey.shape
        return QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    if patch.ndim == 3 and patch.shape[2] == 3:
        rgb = np.ascontiguousarray(patch, dtype=np.uint8)
        h, w = rgb.shape[:2]
        return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    raise ValueError(f"cannot display a patch of shape {patch.shape}")


def render_thumbnail(patch: np.ndarray, size: int, rejected: bool = False) -> QPixmap:
    """Render a patch as a ``size`` x ``size`` pixmap; rejected cells dimmed in a red frame.

    Parameters
    ----------
    patch : numpy.ndarray
        See :func:`patch_to_qimage`.
    size : int
        Edge of the square thumbnail, px.
    rejected : bool
        Draw the QC-rejected marking.

    Returns
    -------
    QPixmap
        The thumbnail.
    """
    image = patch_to_qimage(patch).scaled(
        size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    pixmap = QPixmap.fromImage(image)
    if rejected:
        painter = QPainter(pixmap)
        painter.fillRect(pixmap.rect(), QColor(255, 255, 255, 90))
        pen = QPen(REJECTED_COLOUR)
        pen.setWidth(3)
        painter.setPen(pen)
        painter.drawRect(pixmap.rect().adjusted(1, 1, -2, -2))
        painter.end()
    return pixmap


class GalleryModel(QAbstractListModel):
    """Flat list model of the project's cells, filtered and sorted by index arrays.

    Parameters
    ----------
    project : GalleryProject, optional
        The open project (anything with ``n_cells``, ``classes``, ``cells``, ``image``).
    sort_key : callable, optional
        Cell table -> one key per cell; ascending, ties in cell-id order. Defaults to
        :func:`qc_first_sort_key`.
    thumb_size : int
        Thumbnail edge, px.
    cache_size : int
        Number of thumbnails kept (LRU).
    parent : QObject, optional
        Qt parent.
    """

    QC_FILTERS = ("all", "passed", "rejected")

    def __init__(
        self,
        project: GalleryProject | None = None,
        sort_key: SortKey | None = None,
        thumb_size: int = 64,
        cache_size: int = 3000,
        parent: Any = None,
    ) -> None:
        super().__init__(parent)
        self._project: GalleryProject | None = None
        self._base_sort_key: SortKey = sort_key or qc_first_sort_key
        self._sort_key: SortKey = self._base_sort_key
        self.thumb_size = int(thumb_size)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._qc_filter = "all"
        self._label_filter: int | None = None
        self._order = np.zeros(0, dtype=np.int64)
        self._pred: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        if project is not None:
            self.set_project(project)

    # -- state -------------------------------------------------------------------------
    @property
    def project(self) -> GalleryProject | None:
        """The project shown (None when empty)."""
        return self._project

    @property
    def order(self) -> np.ndarray:
        """Project rows in gallery order (read-only view)."""
        view = self._order.view()
        view.flags.writeable = False
        return view

    def set_predictions(
        self, predicted: np.ndarray | None, confidence: np.ndarray | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        """Show predictions (class codes into ``class_names`` and calibrated confidence).

        With predictions the gallery puts the least certain cells first and captions each
        passed cell with its predicted class and confidence; ``None`` restores the plain
        view.
        """
        if predicted is None or confidence is None:
            self._pred = None
            self._sort_key = self._base_sort_key
        else:
            self._pred = (np.asarray(predicted), np.asarray(confidence), list(class_names or []))
            self._sort_key = least_certain_first(self._pred[1])
        self._refresh()

    def set_project(self, project: GalleryProject | None) -> None:
        """Show ``project`` (None empties the gallery); filters are kept."""
        self.beginResetModel()
        self._pred = None
        self._sort_key = self._base_sort_key
        self._project = project
        self._cache.clear()
        self._order = self._compute_order()
        self.endResetModel()

    def set_sort_key(self, sort_key: SortKey | None) -> None:
        """Re-sort with ``sort_key`` (None restores :func:`qc_first_sort_key`)."""
        self._base_sort_key = self._sort_key = sort_key or qc_first_sort_key
        self._refresh()

    def set_filter(self, qc: str | None = None, label: int | None | str = "keep") -> None:
        """Filter by QC outcome and/or given label.

        Parameters
        ----------
        qc : {"all", "passed", "rejected"}, optional
            QC filter; None keeps the current one.
        label : int or None
            Class code to show, -1 for unlabelled cells, None for all labels; the default
            ``"keep"`` keeps the current label filter.
        """
        if qc is not None:
            if qc not in self.QC_FILTERS:
                raise ValueError(f"qc filter must be one of {self.QC_FILTERS}, not {qc!r}")
            self._qc_filter = qc
        if label != "keep":
            self._label_filter = None if label is None else int(label)
        self._refresh()

    @property
    def qc_filter(self) -> str:
        """Current QC filter."""
        return self._qc_filter

    @property
    def label_filter(self) -> int | None:
        """Current label filter (class code, -1 unlabelled, None all)."""
        return self._label_filter

    def _refresh(self) -> None:
        self.beginResetModel()
        self._order = self._compute_order()
        self.endResetModel()

    def _compute_order(self) -> np.ndarray:
        project = self._project
        if project is None or project.n_cells == 0:
            return np.zeros(0, dtype=np.int64)
        cells = project.cells
        keep = np.ones(project.n_cells, dtype=bool)
        qc = np.asarray(cells["qc_pass"], dtype=bool)
        if self._qc_filter == "passed":
            keep &= qc
        elif self._qc_filter == "rejected":
            keep &= ~qc
        if self._label_filter is not None:
            keep &= np.asarray(cells["given_label"]) == self._label_filter
        rows = np.flatnonzero(keep)
        key = np.asarray(self._sort_key(cells))
        return rows[np.argsort(key[rows], kind="stable")].astype(np.int64)

    def row_of_cell(self, cell_row: int) -> int:
        """Return the gallery row showing project row ``cell_row``, or -1 if filtered out."""
        hits = np.flatnonzero(self._order == cell_row)
        return int(hits[0]) if hits.size else -1

    def cell_row(self, row: int) -> int:
        """Return the project row (cell index) shown at gallery ``row``."""
        return int(self._order[row])

    # -- Qt model API ------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008, D102
        return 0 if parent.isValid() else int(self._order.size)

    def flags(self, index: _Index) -> Qt.ItemFlag:  # noqa: D102
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: D102
        project = self._project
        if project is None or not index.isValid() or not 0 <= index.row() < self._order.size:
            return None
        i = int(self._order[index.row()])
        if role == Qt.ItemDataRole.DecorationRole:
            try:
                return self.thumbnail(i)
            except Exception as exc:  # a failing read must not break painting of the rest
                log.warning("cannot read the patch of cell %d: %s", i, exc)
                return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.caption(i)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tooltip(i)
        if role == Qt.ItemDataRole.ForegroundRole:
            return None if self._passed(i) else REJECTED_COLOUR
        if role == CellRowRole:
            return i
        if role == QcPassRole:
            return self._passed(i)
        return None

    # -- per-cell content (touches only cell i) ----------------------------------------
    def _passed(self, i: int) -> bool:
        assert self._project is not None
        return bool(self._project.cells["qc_pass"][i])

    def label_name(self, i: int) -> str:
        """Return the given label name of project row ``i`` ('' when unlabelled)."""
        assert self._project is not None
        code = int(self._project.cells["given_label"][i])
        classes = self._project.classes
        return classes[code] if 0 <= code < len(classes) else ""

    def qc_reason(self, i: int) -> str:
        """Return the QC rejection reason of project row ``i`` ('' when passed)."""
        assert self._project is not None
        reason = self._project.cells["qc_reason"][i]
        if isinstance(reason, bytes | np.bytes_):
            return reason.decode("utf-8", "replace")
        return str(reason)

    def predicted(self, i: int) -> tuple[str, float] | None:
        """Predicted class name and calibrated confidence of row ``i`` (None without)."""
        if self._pred is None:
            return None
        codes, conf, names = self._pred
        code = int(codes[i])
        return (names[code] if 0 <= code < len(names) else "?"), float(conf[i])

    def caption(self, i: int) -> str:
        """Text under the thumbnail.

        The QC reason of a rejected cell; else the predicted class and confidence when
        there are predictions (prefixed with ``≠`` where it disputes the given label),
        else the given label.
        """
        if not self._passed(i):
            return self.qc_reason(i) or "rejected"
        pred = self.predicted(i)
        if pred is not None:
            mark = "≠ " if self.label_name(i) and pred[0] != self.label_name(i) else ""
            return f"{mark}{pred[0]} {pred[1]:.0%}"
        return self.label_name(i) or "—"

    def tooltip(self, i: int) -> str:
        """Cell id, label, diameter and QC outcome of project row ``i``."""
        assert self._project is not None
        cells = self._project.cells
        parts = [f"Cell {int(cells['cell_id'][i])}", f"label: {self.label_name(i) or 'none'}"]
        pred = self.predicted(i)
        if pred is not None:
            parts.append(f"predicted: {pred[0]} ({pred[1]:.1%} calibrated)")
        if "diameter_um" in cells:
            parts.append(f"diameter: {float(cells['diameter_um'][i]):.2f} µm")
        qc = "QC passed" if self._passed(i) else f"QC rejected ({self.qc_reason(i)})"
        parts.append(qc)
        return "\n".join(parts)

    def thumbnail(self, i: int) -> QPixmap:
        """Return the cached thumbnail of project row ``i``, rendering it on a miss."""
        pixmap = self._cache.get(i)
        if pixmap is not None:
            self._cache.move_to_end(i)
            return pixmap
        assert self._project is not None
        pixmap = render_thumbnail(self._project.image(i), self.thumb_size, not self._passed(i))
        self._cache[i] = pixmap
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pixmap

    @property
    def cached_rows(self) -> int:
        """Number of thumbnails currently cached."""
        return len(self._cache)


class GalleryDelegate(QStyledItemDelegate):
    """Default painting with a fixed size hint, so layout never asks the model for data.

    (With uniform item sizes Qt measures one sample item, the last row, through the
    delegate; a fixed hint keeps that from reading a patch at the far end of the file.)
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.item_size = QSize(64, 80)

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:  # noqa: N802, D102
        return self.item_size


class GalleryView(QListView):
    """Icon-mode list view: fixed grid, uniform sizes, batched layout, no per-cell widget.

    Emits ``cellSelected(int)`` with the project row of the current item, -1 when none.
    """

    cellSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 64) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSelectionRectVisible(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.delegate = GalleryDelegate(self)
        self.setItemDelegate(self.delegate)
        self.set_thumb_size(thumb_size)

    def set_thumb_size(self, size: int, caption_width: int = 0) -> None:
        """Set the icon size and the fixed grid (icon plus one caption line).

        Parameters
        ----------
        size : int
            Thumbnail edge, px.
        caption_width : int
            Widest caption to fit without eliding, px (capped at twice the thumbnail).
        """
        text_h = self.fontMetrics().height()
        width = max(size, min(caption_width, 2 * size)) + 14
        self.setIconSize(QSize(size, size))
        self.setGridSize(QSize(width, size + text_h + 10))
        self.delegate.item_size = QSize(width - 4, size + text_h + 6)

    def fit_captions(self, captions: list[str]) -> None:
        """Widen the grid so that these captions (class names, QC reasons) show in full."""
        metrics = self.fontMetrics()
        widest = max((metrics.horizontalAdvance(c) for c in captions), default=0)
        self.set_thumb_size(self.iconSize().width(), widest + 6)

    def setModel(self, model: Any) -> None:  # noqa: N802, D102
        super().setModel(model)
        if model is not None:
            self.selectionModel().currentChanged.connect(self._current_changed)
            model.modelReset.connect(lambda: self.cellSelected.emit(-1))

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = current.data(CellRowRole) if current.isValid() else None
        self.cellSelected.emit(-1 if row is None else int(row))

    def selected_cells(self) -> np.ndarray:
        """Project rows of the selected items, in gallery order."""
        rows = sorted(ix.row() for ix in self.selectionModel().selectedIndexes())
        model = self.model()
        return np.asarray([model.cell_row(r) for r in rows], dtype=np.int64)

    def select_cell(self, cell_row: int) -> bool:
        """Make project row ``cell_row`` current and visible; False if it is filtered out."""
        model = self.model()
        row = model.row_of_cell(cell_row)
        if row < 0:
            return False
        index = model.index(row, 0)
        self.setCurrentIndex(index)
        self.scrollTo(index)
        return True


class GalleryPanel(QWidget):
    """Filter combo boxes (QC outcome, given label), a count and the gallery view.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    sort_key : callable, optional
        Passed to :class:`GalleryModel`.
    """

    cellSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None, sort_key: SortKey | None = None) -> None:
        super().__init__(parent)
        self.model = GalleryModel(sort_key=sort_key, parent=self)
        self.view = GalleryView(self, thumb_size=self.model.thumb_size)
        self.view.setModel(self.model)
        self.view.cellSelected.connect(self.cellSelected)

        self.qc_combo = QComboBox(self)
        for text, value in (("All cells", "all"), ("QC passed", "passed"),
                            ("QC rejected", "rejected")):
            self.qc_combo.addItem(text, value)
        self.label_combo = QComboBox(self)
        self.count_label = QLabel(self)

        top = QHBoxLayout()
        top.addWidget(QLabel("Show:", self))
        top.addWidget(self.qc_combo)
        top.addWidget(QLabel("Label:", self))
        top.addWidget(self.label_combo)
        top.addStretch(1)
        top.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)

        self.qc_combo.currentIndexChanged.connect(self._filters_changed)
        self.label_combo.currentIndexChanged.connect(self._filters_changed)
        self._fill_label_combo([])
        self._update_count()

    def set_project(self, project: GalleryProject | None) -> None:
        """Show ``project`` with the filters reset to everything."""
        self.qc_combo.blockSignals(True)
        self.qc_combo.setCurrentIndex(0)
        self.qc_combo.blockSignals(False)
        classes = list(project.classes) if project is not None else []
        self._fill_label_combo(classes)
        self.view.fit_captions([*classes, *QC_CAPTIONS])
        self.model.set_filter(qc="all", label=None)
        self.model.set_project(project)
        self._update_count()

    def _fill_label_combo(self, classes: list[str]) -> None:
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItem("All labels", None)
        for code, name in enumerate(classes):
            self.label_combo.addItem(name, code)
        self.label_combo.addItem("Unlabelled", -1)
        self.label_combo.blockSignals(False)

    def _filters_changed(self) -> None:
        self.model.set_filter(qc=self.qc_combo.currentData(), label=self.label_combo.currentData())
        self._update_count()

    def _update_count(self) -> None:
        project = self.model.project
        total = project.n_cells if project is not None else 0
        self.count_label.setText(f"{self.model.rowCount():,} of {total:,} objects")
