"""The cell gallery: a virtualised grid of thumbnails over the review session's cells.

The grid paints only the tiles on screen: its layout is arithmetic over the groups of
the session's visible cells (a header line per group, then lines of tiles), so 100k or
1M cells cost two index arrays, not a widget or item per cell. Thumbnails are read from
the project when a tile first shows and kept in an LRU cache; the next screen is read
ahead in idle time. Selection and the current cell belong to the session (the embedding
view and the inspector share them); the grid paints them and writes back through
``session.select``.

Each tile shows the patch, a border in the predicted class's colour (a colour-blind-safe
palette), the given label and the prediction with its calibrated confidence, a bar of
the MC-dropout spread, a mark for the review decision, ``≠`` when the confident
prediction disputes the label and ``OOD`` for out-of-distribution cells.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import QAbstractScrollArea, QRubberBand, QWidget

from hemalens.gui.palette import DECISION_MARKS, class_colour

log = logging.getLogger(__name__)

DECISION_NAMES = ("undecided", "confirmed", "relabelled", "excluded", "unsure")
REJECTED_COLOUR = QColor(200, 40, 40)
#: Display ranges of phase thumbnails: the stored [0, 1] scale (brightness compares
#: between cells), or each patch stretched between its 1st and 99th percentile.
DISPLAY_RANGES = ("fixed", "auto")


def patch_to_qimage(patch: np.ndarray, display: str = "fixed") -> QImage:
    """Convert a project patch to a QImage that owns its memory.

    Parameters
    ----------
    patch : numpy.ndarray
        Phase patch (S, S) float in [0, 1], or RGB (S, S, 3) uint8.
    display : {"fixed", "auto"}
        Phase only: ``fixed`` maps 0 -> black and 1 -> white; ``auto`` stretches the
        patch's 1st..99th percentile (dark objects become visible; the stored patch is
        unchanged).

    Returns
    -------
    QImage
        Grayscale8 or RGB888 image.
    """
    if patch.ndim == 2:
        p = np.nan_to_num(np.asarray(patch, np.float32), nan=0.0)
        if display == "auto":
            lo, hi = np.percentile(p, (1, 99))
            p = (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)
        grey = np.ascontiguousarray(np.clip(p * 255.0 + 0.5, 0, 255).astype(np.uint8))
        h, w = grey.shape
        return QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    if patch.ndim == 3 and patch.shape[2] == 3:
        rgb = np.ascontiguousarray(patch, dtype=np.uint8)
        h, w = rgb.shape[:2]
        return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    raise ValueError(f"cannot display a patch of shape {patch.shape}")


def placeholder_pixmap(size: int, text: str = "unreadable") -> QPixmap:
    """Draw a visible stand-in for a patch that could not be read (never a blank tile)."""
    pix = QPixmap(size, size)
    pix.fill(QColor(60, 60, 60))
    p = QPainter(pix)
    p.setPen(QPen(REJECTED_COLOUR, 2))
    p.drawLine(4, 4, size - 4, size - 4)
    p.drawLine(size - 4, 4, 4, size - 4)
    font = QFont()
    font.setPointSizeF(max(6.0, size / 9))
    p.setFont(font)
    p.setPen(QColor(240, 240, 240))
    p.drawText(QRect(0, size - size // 3, size, size // 3), Qt.AlignmentFlag.AlignCenter, text)
    p.end()
    return pix


class GalleryData:
    """What the grid paints: per-cell facts from the session, thumbnails from the project.

    Parameters
    ----------
    session : ReviewSession or None
        The review session.
    thumb_size : int
        Thumbnail edge, px.
    cache_size : int
        Thumbnails kept (LRU).
    """

    def __init__(self, session: Any = None, thumb_size: int = 64, cache_size: int = 4000) -> None:
        self.session = session
        self.thumb_size = int(thumb_size)
        self.cache_size = int(cache_size)
        self.display = "fixed"
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self.read_errors: dict[int, str] = {}

    def set_session(self, session: Any) -> None:
        """Show another session (None: nothing)."""
        self.session = session
        self._cache.clear()
        self.read_errors.clear()

    def set_display(self, display: str) -> None:
        """Choose the display range of phase thumbnails (see :data:`DISPLAY_RANGES`)."""
        if display not in DISPLAY_RANGES:
            raise ValueError(f"display must be one of {DISPLAY_RANGES}")
        if display != self.display:
            self.display = display
            self._cache.clear()

    def thumbnail(self, cell: int) -> QPixmap:
        """Return the cached thumbnail of ``cell``; a placeholder when its patch is unreadable."""
        pix = self._cache.get(cell)
        if pix is not None:
            self._cache.move_to_end(cell)
            return pix
        try:
            image = patch_to_qimage(self.session.project.image(cell), self.display)
            pix = QPixmap.fromImage(image.scaled(
                self.thumb_size, self.thumb_size, Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation))
        except Exception as exc:  # a damaged patch must show as such, not break the grid
            self.read_errors[cell] = " ".join(str(exc).split())
            log.warning("cannot read the patch of cell %d: %s", cell, exc)
            pix = placeholder_pixmap(self.thumb_size)
        self._cache[cell] = pix
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pix

    def is_cached(self, cell: int) -> bool:
        """Whether the thumbnail of ``cell`` is in the cache."""
        return cell in self._cache

    @property
    def cached(self) -> int:
        """Number of cached thumbnails."""
        return len(self._cache)

    # -- facts of one cell (no Qt) -------------------------------------------------------
    def label_name(self, cell: int) -> str:
        """Return the current label of ``cell`` ('' when none)."""
        s = self.session
        code = int(s.labels[cell])
        return s.classes[code] if 0 <= code < len(s.classes) else ""

    def qc_reason(self, cell: int) -> str:
        """QC rejection reason ('' when passed)."""
        reason = self.session.project.cells["qc_reason"][cell]
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)

    def captions(self, cell: int) -> tuple[str, str]:
        """Two caption lines: the given label, and the prediction with its confidence."""
        s = self.session
        if not s.qc[cell]:
            return (self.label_name(cell) or "—", f"QC: {self.qc_reason(cell) or 'rejected'}")
        given = self.label_name(cell) or "no label"
        name = str(s.predicted_names[cell])
        conf = float(s.confidence[cell])
        pred = f"{name} {conf:.0%}" if name and math.isfinite(conf) else ""
        return given, pred

    def tooltip(self, cell: int) -> str:
        """Cell id, label, prediction, spread, decision, diameter and QC of ``cell``."""
        s = self.session
        parts = [f"Cell {cell}", f"label: {self.label_name(cell) or 'none'}"]
        name = str(s.predicted_names[cell])
        if name:
            parts.append(f"predicted: {name} ({float(s.confidence[cell]):.1%} calibrated; "
                         f"MC spread ± {float(s.spread[cell]):.3f})")
        if s.is_disputed(cell):
            parts.append("≠ the confident prediction disputes the label")
        if s.ood[cell]:
            parts.append("OOD: out of distribution, counted apart")
        parts.append(f"decision: {DECISION_MARKS[DECISION_NAMES[int(s.decisions[cell])]][2]}")
        cells = s.project.cells
        if "diameter_um" in cells:
            parts.append(f"diameter: {float(cells['diameter_um'][cell]):.2f} µm")
        parts.append("QC passed" if s.qc[cell] else f"QC rejected ({self.qc_reason(cell)})")
        if cell in self.read_errors:
            parts.append(f"patch unreadable: {self.read_errors[cell]}")
        return "\n".join(parts)


class GalleryGrid(QAbstractScrollArea):
    """The virtualised grid (see the module docstring).

    Signals
    -------
    currentChanged(int)
        The current cell (-1: none).
    contextMenuAt(int, QPoint)
        Right click on a cell, with the global position.
    """

    currentChanged = Signal(int)
    contextMenuAt = Signal(int, QPoint)
    activated = Signal(int)
    painted = Signal()  # after every repaint of the tiles (latency benchmark, screenshots)

    def __init__(self, data: GalleryData, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.viewport().setMouseTracking(False)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        self._segments: list[tuple[str | None, np.ndarray]] = []
        self._order = np.zeros(0, np.int64)  # all cells in display order
        self._pos_of = np.zeros(0, np.int64)  # cell -> position in _order (-1: hidden)
        self._seg_start = np.zeros(1, np.int64)  # position where each segment starts
        self._seg_line = np.zeros(1, np.int64)  # first line of each segment (its header)
        self._selected = np.zeros(0, bool)
        self.current = -1  # position in _order
        self._anchor = -1
        self.header_h = 26
        self._rubber: QRubberBand | None = None
        self._rubber_origin = QPoint()
        self._prefetch = QTimer(self)
        self._prefetch.setSingleShot(True)
        self._prefetch.setInterval(30)
        self._prefetch.timeout.connect(self._read_ahead)
        self.set_thumb_size(data.thumb_size)

    # -- geometry ---------------------------------------------------------------------------
    def set_thumb_size(self, size: int) -> None:
        """Set the thumbnail edge (px); tiles add two caption lines and a spread bar."""
        self.data.thumb_size = int(size)
        fm = self.fontMetrics()
        self.tile_w = max(size, fm.horizontalAdvance("neutrophil 100%")) + 12
        self.tile_h = size + 2 * fm.height() + 14
        self._relayout()

    @property
    def cols(self) -> int:
        """Tiles per line."""
        return max(1, self.viewport().width() // self.tile_w)

    def set_segments(self, segments: list[tuple[str | None, np.ndarray]], n_cells: int,
                     keep_current: bool = True) -> None:
        """Show these groups of cells (header text or None, cell ids) in this order.

        Parameters
        ----------
        segments : list
            ``(header, cells)`` per group; None headers draw no header line.
        n_cells : int
            Cells in the project (size of the lookup tables).
        keep_current : bool
            Keep the current cell when it is still shown.
        """
        old = self.current_cell
        self._segments = [(h, np.asarray(c, np.int64)) for h, c in segments]
        self._order = (np.concatenate([c for _, c in self._segments])
                       if self._segments else np.zeros(0, np.int64))
        self._pos_of = np.full(n_cells, -1, np.int64)
        self._pos_of[self._order] = np.arange(self._order.size)
        if self._selected.size != n_cells:
            self._selected = np.zeros(n_cells, bool)
        self.current = -1
        self._anchor = -1
        if keep_current and old >= 0 and old < n_cells and self._pos_of[old] >= 0:
            self.current = int(self._pos_of[old])
        self._relayout()

    def _relayout(self) -> None:
        cols = self.cols
        sizes = np.array([c.size for _, c in self._segments], np.int64)
        headers = np.array([h is not None for h, _ in self._segments], np.int64)
        lines = headers + (sizes + cols - 1) // cols
        self._seg_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self._seg_line = np.r_[0, np.cumsum(lines)].astype(np.int64)
        self._headers = headers
        # header lines are shorter: line y offsets accumulate per segment
        self._seg_y = np.r_[0, np.cumsum(headers * self.header_h + (lines - headers)
                                         * self.tile_h)].astype(np.int64)
        total = int(self._seg_y[-1])
        bar = self.verticalScrollBar()
        bar.setRange(0, max(0, total - self.viewport().height()))
        bar.setPageStep(max(1, self.viewport().height()))
        bar.setSingleStep(self.tile_h // 2)
        self.viewport().update()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802, D102
        keep = self.current_cell
        super().resizeEvent(event)
        self._relayout()
        if keep >= 0:
            self.ensure_visible(int(self._pos_of[keep]))

    def _segment_of(self, pos: int) -> int:
        return int(np.searchsorted(self._seg_start, pos, side="right") - 1)

    def tile_rect(self, pos: int) -> QRect:
        """Return the rectangle of the tile at display position ``pos`` (content coordinates)."""
        k = self._segment_of(pos)
        off = pos - int(self._seg_start[k])
        row, col = divmod(off, self.cols)
        y = int(self._seg_y[k]) + (self.header_h if self._headers[k] else 0) + row * self.tile_h
        return QRect(col * self.tile_w, y, self.tile_w, self.tile_h)

    def position_at(self, point: QPoint) -> int:
        """Display position of the tile under a viewport point (-1: none)."""
        if point.x() < 0 or point.y() < 0:
            return -1
        y = point.y() + self.verticalScrollBar().value()
        k = int(np.searchsorted(self._seg_y, y, side="right") - 1)
        if k < 0 or k >= len(self._segments):
            return -1
        y0 = y - int(self._seg_y[k]) - (self.header_h if self._headers[k] else 0)
        if y0 < 0:
            return -1
        col = point.x() // self.tile_w
        if col >= self.cols:
            return -1
        off = (y0 // self.tile_h) * self.cols + col
        if off >= self._segments[k][1].size:
            return -1
        return int(self._seg_start[k] + off)

    # -- what is shown ------------------------------------------------------------------------
    @property
    def order(self) -> np.ndarray:
        """The shown cells in display order."""
        return self._order

    @property
    def current_cell(self) -> int:
        """The current cell (-1: none)."""
        return int(self._order[self.current]) if 0 <= self.current < self._order.size else -1

    def visible_positions(self) -> range:
        """Display positions of the tiles (partly) on screen."""
        if self._order.size == 0:
            return range(0)
        top = self.verticalScrollBar().value()
        first = self.position_at(QPoint(0, 0))
        if first < 0:  # on a header: the first tile below it
            k = int(np.searchsorted(self._seg_y, top, side="right") - 1)
            first = int(self._seg_start[min(k, len(self._segments) - 1)])
        last = self.position_at(QPoint(self.viewport().width() - 1,
                                       self.viewport().height() - 1))
        if last < 0:
            last = min(self._order.size - 1, first + (self.viewport().height() // self.tile_h
                                                      + 2) * self.cols)
        return range(max(0, first), min(self._order.size, last + self.cols + 1))

    def set_selection_mask(self, selected: np.ndarray) -> None:
        """Paint the session's selection, a mask over all cells (painted, not owned)."""
        old, self._selected = self._selected, selected
        vis = self.visible_positions()
        if old.shape != selected.shape or not vis:
            self.viewport().update()
            return
        # Repaint only the shown tiles whose selection changed: a key press stays cheap.
        cells = self._order[vis.start:vis.stop]
        self._update_positions(np.flatnonzero(old[cells] != selected[cells]) + vis.start)

    def update_cells(self, cells: np.ndarray) -> None:
        """Repaint the tiles of these cells (their label or decision changed)."""
        pos = self._pos_of[np.asarray(cells, np.int64)] if len(cells) else np.zeros(0, int)
        self._update_positions(pos)

    def _update_positions(self, positions: Any) -> None:
        """Schedule a repaint of the tiles at these display positions that are on screen."""
        vis = self.visible_positions()
        pos = np.asarray(positions, np.int64)
        pos = pos[(pos >= vis.start) & (pos < vis.stop)] if vis else pos[:0]
        top = self.verticalScrollBar().value()
        for p in pos.tolist():
            self.viewport().update(self.tile_rect(p).translated(0, -top))

    # -- painting -----------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802, D102
        painter = QPainter(self.viewport())
        painter.fillRect(event.rect(), self.palette().base())
        if self.data.session is None or self._order.size == 0:
            painter.setPen(self.palette().text().color())
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter,
                             "No cells to show" if self.data.session else "No project open")
            painter.end()
            return
        top = self.verticalScrollBar().value()
        height = self.viewport().height()
        for k, (header, _cells) in enumerate(self._segments):
            y0 = int(self._seg_y[k]) - top
            if y0 > height or int(self._seg_y[k + 1]) - top < 0:
                continue
            if header is not None and -self.header_h < y0 < height:
                self._paint_header(painter, k, header, y0)
        vis = self.visible_positions()
        for pos in vis:
            rect = self.tile_rect(pos).translated(0, -top)
            if rect.intersects(event.rect()):
                self._paint_tile(painter, int(self._order[pos]), pos, rect)
        painter.end()
        self.painted.emit()
        self._prefetch.start()

    def _paint_header(self, painter: QPainter, k: int, text: str, y: int) -> None:
        rect = QRect(0, y, self.viewport().width(), self.header_h)
        painter.fillRect(rect, self.palette().alternateBase())
        cells = self._segments[k][1]
        code = int(self.data.session.predicted[cells[0]]) if cells.size else -1
        painter.fillRect(QRect(4, y + 6, 14, self.header_h - 12), class_colour(code))
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(self.palette().text().color())
        painter.drawText(rect.adjusted(24, 0, 0, 0), Qt.AlignmentFlag.AlignVCenter, text)
        font.setBold(False)
        painter.setFont(font)

    def _paint_tile(self, painter: QPainter, cell: int, pos: int, rect: QRect) -> None:
        s = self.data.session
        size = self.data.thumb_size
        inner = rect.adjusted(4, 4, -4, -4)
        selected = bool(self._selected[cell]) if cell < self._selected.size else False
        if selected:
            painter.fillRect(rect.adjusted(1, 1, -1, -1), self.palette().highlight())
        img_rect = QRect(inner.x() + (inner.width() - size) // 2, inner.y(), size, size)
        painter.drawPixmap(img_rect, self.data.thumbnail(cell))
        passed = bool(s.qc[cell])
        code = int(s.predicted[cell])
        pen = QPen(class_colour(code) if passed else REJECTED_COLOUR, 3)
        if not passed:
            pen.setStyle(Qt.PenStyle.DashLine)
            painter.fillRect(img_rect, QColor(255, 255, 255, 90))
        painter.setPen(pen)
        painter.drawRect(img_rect.adjusted(1, 1, -2, -2))
        # decision mark, dispute and OOD badges
        decision = DECISION_NAMES[int(s.decisions[cell])]
        symbol, colour, _ = DECISION_MARKS[decision]
        if symbol:
            badge = QRect(img_rect.right() - 17, img_rect.top() + 2, 16, 16)
            painter.setBrush(QColor(colour))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.drawEllipse(badge)
            painter.setPen(QColor("white"))
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, symbol)
            painter.setBrush(Qt.BrushStyle.NoBrush)
        if s.is_disputed(cell):
            painter.setPen(QColor("#D55E00"))
            font = painter.font()
            font.setBold(True)
            painter.setFont(font)
            painter.drawText(QRect(img_rect.left() + 3, img_rect.top() + 1, 16, 16),
                             Qt.AlignmentFlag.AlignCenter, "≠")
            font.setBold(False)
            painter.setFont(font)
        if s.ood[cell]:
            badge = QRect(img_rect.left() + 2, img_rect.bottom() - 14, 26, 12)
            painter.fillRect(badge, QColor(0, 0, 0, 170))
            painter.setPen(QColor("#F0E442"))
            font = painter.font()
            small = QFont(font)
            small.setPointSizeF(max(6.0, font.pointSizeF() * 0.7))
            painter.setFont(small)
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "OOD")
            painter.setFont(font)
        # MC spread bar: 0 .. 0.25 std fills the bar
        spread = float(s.spread[cell])
        bar = QRect(img_rect.left(), img_rect.bottom() + 3, size, 4)
        painter.fillRect(bar, QColor(0, 0, 0, 30))
        if math.isfinite(spread):
            fill = int(round(min(1.0, spread / 0.25) * size))
            painter.fillRect(QRect(bar.left(), bar.top(), fill, bar.height()), QColor("#CC79A7"))
        # captions
        given, pred = self.data.captions(cell)
        fm = self.fontMetrics()
        text_colour = (self.palette().highlightedText() if selected
                       else self.palette().text()).color()
        painter.setPen(text_colour if passed else REJECTED_COLOUR)
        y = bar.bottom() + 2
        for line in (given, pred):
            painter.drawText(QRect(rect.left() + 2, y, rect.width() - 4, fm.height()),
                             Qt.AlignmentFlag.AlignHCenter,
                             fm.elidedText(line, Qt.TextElideMode.ElideRight, rect.width() - 4))
            y += fm.height()
        if pos == self.current:
            focus = QPen(self.palette().text().color(), 1, Qt.PenStyle.DotLine)
            painter.setPen(focus)
            painter.drawRect(rect.adjusted(1, 1, -2, -2))

    def _read_ahead(self) -> None:
        """Read the thumbnails of the next screen while the user looks at this one."""
        vis = self.visible_positions()
        if not vis:
            return
        ahead = range(vis.stop, min(self._order.size, vis.stop + len(vis)))
        done = 0
        for pos in ahead:
            cell = int(self._order[pos])
            if not self.data.is_cached(cell):
                self.data.thumbnail(cell)
                done += 1
                if done >= 40:  # a slice per idle moment: never a long stall
                    self._prefetch.start()
                    return

    def _scrolled(self, _value: int) -> None:
        self.viewport().update()

    # -- current and selection ----------------------------------------------------------------
    def ensure_visible(self, pos: int) -> None:
        """Scroll so that the tile at ``pos`` is on screen."""
        if not 0 <= pos < self._order.size:
            return
        rect = self.tile_rect(pos)
        bar = self.verticalScrollBar()
        top, h = bar.value(), self.viewport().height()
        if rect.top() < top:
            bar.setValue(rect.top() - (self.header_h if rect.top() == self._header_top(pos)
                                       else 0))
        elif rect.bottom() > top + h:
            bar.setValue(rect.bottom() - h + 1)

    def _header_top(self, pos: int) -> int:
        k = self._segment_of(pos)
        return int(self._seg_y[k]) + (self.header_h if self._headers[k] else 0)

    def set_current(self, pos: int, *, emit: bool = True) -> None:
        """Make the tile at ``pos`` current (and visible)."""
        if self._order.size == 0:
            pos = -1
        else:
            pos = max(0, min(int(pos), self._order.size - 1))
        changed = pos != self.current
        old, self.current = self.current, pos
        self.ensure_visible(pos)  # a scroll repaints everything through _scrolled
        self._update_positions([old, pos])
        if emit and changed:
            self.currentChanged.emit(self.current_cell)

    def select_cell(self, cell: int) -> bool:
        """Make ``cell`` current; False when it is not shown."""
        if not 0 <= cell < self._pos_of.size or self._pos_of[cell] < 0:
            return False
        self.set_current(int(self._pos_of[cell]))
        return True

    def position_of(self, cell: int) -> int:
        """Display position of ``cell`` (-1: not shown)."""
        return int(self._pos_of[cell]) if 0 <= cell < self._pos_of.size else -1

    # The selection is the session's: the grid asks its owner to change it.
    selectionRequested = Signal(object, int)  # cell ids, current cell

    def _request(self, positions: np.ndarray, current_pos: int) -> None:
        cells = self._order[np.asarray(positions, np.int64)] if len(positions) else \
            np.zeros(0, np.int64)
        self.current = current_pos
        self.selectionRequested.emit(cells, self.current_cell)

    # -- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802, D102
        self.setFocus()
        pos = self.position_at(event.position().toPoint())
        mods = event.modifiers()
        if event.button() == Qt.MouseButton.RightButton:
            if pos >= 0:
                if not self._selected[int(self._order[pos])]:
                    self._anchor = pos
                    self._request(np.array([pos]), pos)
                self.contextMenuAt.emit(int(self._order[pos]),
                                        event.globalPosition().toPoint())
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if pos < 0:
            self._rubber_origin = event.position().toPoint()
            self._rubber = self._rubber or QRubberBand(QRubberBand.Shape.Rectangle,
                                                       self.viewport())
            self._rubber.setGeometry(QRect(self._rubber_origin, QSize()))
            self._rubber.show()
            return
        if mods & Qt.KeyboardModifier.ShiftModifier and self._anchor >= 0:
            lo, hi = sorted((self._anchor, pos))
            self._request(np.arange(lo, hi + 1), pos)
        elif mods & Qt.KeyboardModifier.ControlModifier:
            sel = set(np.flatnonzero(self._selected[self._order]).tolist())
            sel ^= {pos}
            self._anchor = pos
            self._request(np.array(sorted(sel), np.int64), pos)
        else:
            self._anchor = pos
            self._request(np.array([pos]), pos)
        self.ensure_visible(pos)
        self.currentChanged.emit(self.current_cell)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802, D102
        if self._rubber is not None and self._rubber.isVisible():
            self._rubber.setGeometry(QRect(self._rubber_origin,
                                           event.position().toPoint()).normalized())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802, D102
        if self._rubber is None or not self._rubber.isVisible():
            return
        rect = self._rubber.geometry()
        self._rubber.hide()
        top = self.verticalScrollBar().value()
        hit = [p for p in self.visible_positions()
               if self.tile_rect(p).translated(0, -top).intersects(rect)]
        if hit:
            self._anchor = hit[0]
            self._request(np.array(hit, np.int64), hit[0])
            self.currentChanged.emit(self.current_cell)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802, D102
        pos = self.position_at(event.position().toPoint())
        if pos >= 0:
            self.activated.emit(int(self._order[pos]))

    # -- keyboard navigation -----------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802, D102
        if self._order.size == 0:
            super().keyPressEvent(event)
            return
        key, cols = event.key(), self.cols
        page = max(1, self.viewport().height() // self.tile_h) * cols
        cur = max(self.current, 0)
        moves = {
            Qt.Key.Key_Right: cur + 1, Qt.Key.Key_Left: cur - 1,
            Qt.Key.Key_Down: cur + cols, Qt.Key.Key_Up: cur - cols,
            Qt.Key.Key_PageDown: cur + page, Qt.Key.Key_PageUp: cur - page,
            Qt.Key.Key_Home: 0, Qt.Key.Key_End: self._order.size - 1,
        }
        if key == Qt.Key.Key_A and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self._request(np.arange(self._order.size), cur)
            return
        if key not in moves:
            super().keyPressEvent(event)
            return
        new = max(0, min(moves[key], self._order.size - 1))
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            if self._anchor < 0:
                self._anchor = cur
            lo, hi = sorted((self._anchor, new))
            self._request(np.arange(lo, hi + 1), new)
        else:
            self._anchor = new
            self._request(np.array([new]), new)
        self.ensure_visible(new)
        self.currentChanged.emit(self.current_cell)
