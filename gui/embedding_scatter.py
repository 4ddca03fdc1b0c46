"""The embedding view's plot: a pyqtgraph map of up to millions of cells.

Points are held as numpy arrays only (no Python object per point). What is drawn depends
on how many points the visible range holds:

- up to :data:`SCATTER_MAX`: one ``ScatterPlotItem`` per colour category (pxMode dots,
  one brush each), fed with the visible points only;
- more: a density image (an ``ImageItem`` over the visible range, two screen pixels per
  bin) whose colour is a category present in the bin and whose opacity grows with the
  log of the bin's count — the set-up is one ``bincount``, so zoomed out at 1M points a
  redraw costs tens of milliseconds.

The selection is drawn on top (ringed dots, or a bright density layer), then the PLI
overlay (ghosts of the old positions and arrows to the new ones). A :class:`MapViewBox`
turns mouse gestures into signals according to the tool: pan/zoom, lasso, rectangle, or
edit (drag: shift, Shift+drag: rotate, wheel: contract/expand).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QWidget

__all__ = ["SCATTER_MAX", "MapPlot", "MapViewBox"]

#: Most visible points drawn as dots; more are drawn as a density image.
SCATTER_MAX = 40_000
#: Most selected points drawn as ringed dots (more: a density layer).
SELECTION_DOTS_MAX = 40_000
#: Most arrows of the PLI overlay drawn (a seeded sample beyond).
ARROWS_MAX = 500
TOOLS = ("pan", "lasso", "rect", "edit")


class MapViewBox(pg.ViewBox):
    """A ViewBox whose left-button gestures depend on the tool.

    Signals
    -------
    polygonDone(ndarray, object)
        A lasso or rectangle was drawn: ``(V, 2)`` vertices in map coordinates, and the
        keyboard modifiers.
    pointClicked(float, float, object)
        A left click at map ``(x, y)`` with the modifiers.
    editDrag(object, object, bool, bool)
        Edit tool: drag start and current map points, rotating (Shift held), finished.
    editWheel(int, object)
        Edit tool: wheel steps (positive: contract) at a map point.
    """

    polygonDone = Signal(object, object)
    pointClicked = Signal(float, float, object)
    editDrag = Signal(object, object, bool, bool)
    editWheel = Signal(int, object)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool = "pan"
        self._path: list[QPointF] = []
        self.outline = QGraphicsPathItem()
        pen = QPen(QColor(20, 20, 20), 0)
        pen.setCosmetic(True)
        pen.setWidth(2)
        pen.setStyle(Qt.PenStyle.DashLine)
        self.outline.setPen(pen)
        self.outline.setZValue(100)
        self.addItem(self.outline, ignoreBounds=True)

    def set_tool(self, tool: str) -> None:
        """Choose the left-button tool (one of :data:`TOOLS`)."""
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}")
        self.tool = tool
        self.setMouseEnabled(True, True)

    def mouseClickEvent(self, ev: Any) -> None:  # noqa: N802, D102
        if ev.button() == Qt.MouseButton.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            ev.accept()
            self.pointClicked.emit(p.x(), p.y(), ev.modifiers())
            return
        super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802, D102
        if ev.button() != Qt.MouseButton.LeftButton or self.tool == "pan":
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        start = self.mapSceneToView(ev.buttonDownScenePos())
        here = self.mapSceneToView(ev.scenePos())
        if self.tool == "edit":
            rotating = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            self.editDrag.emit((start.x(), start.y()), (here.x(), here.y()), rotating,
                               ev.isFinish())
            return
        if ev.isStart() or not self._path:
            self._path = [start]
        if self.tool == "lasso":
            self._path.append(here)
            poly = self._path
        else:
            poly = [start, QPointF(here.x(), start.y()), here, QPointF(start.x(), here.y())]
        path = QPainterPath(poly[0])
        for p in poly[1:]:
            path.lineTo(p)
        path.closeSubpath()
        self.outline.setPath(path)
        if ev.isFinish():
            vertices = np.array([[p.x(), p.y()] for p in poly], np.float64)
            self._path = []
            self.outline.setPath(QPainterPath())
            self.polygonDone.emit(vertices, ev.modifiers())

    def wheelEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802, D102
        if self.tool == "edit":
            ev.accept()
            steps = int(np.sign(ev.delta())) if ev.delta() else 0
            p = self.mapSceneToView(ev.scenePos())
            if steps:
                self.editWheel.emit(steps, (p.x(), p.y()))
            return
        super().wheelEvent(ev, axis)


class MapPlot(pg.PlotWidget):
    """The map: points coloured by category, the selection, the PLI overlay.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        self.vb = MapViewBox()
        super().__init__(parent, viewBox=self.vb)
        self.setBackground("w")
        self.plotItem.hideAxis("left")
        self.plotItem.hideAxis("bottom")
        self.vb.setAspectLocked(False)
        self.xy = np.zeros((0, 2))
        self.cat = np.zeros(0, np.int64)
        self.colours = np.zeros((0, 4), np.ubyte)
        self.selected = np.zeros(0, bool)
        self._draw_order = np.zeros(0, np.int64)
        self._xo = self._yo = np.zeros(0, np.float32)
        self._colo = np.zeros(0, np.uint32)
        self._selo = np.zeros(0, bool)
        self._hold = False
        self.items: list[pg.ScatterPlotItem] = []
        self.image = pg.ImageItem()
        self.image.setZValue(1)
        self.sel_image = pg.ImageItem()
        self.sel_image.setZValue(3)
        self.sel_dots = pg.ScatterPlotItem(pxMode=True, size=8, brush=None,
                                           pen=pg.mkPen((0, 0, 0), width=1.5))
        self.sel_dots.setZValue(4)
        self.ghosts = pg.ScatterPlotItem(pxMode=True, size=6, brush=None,
                                         pen=pg.mkPen(120, 120, 120, 170, width=1))
        self.ghosts.setZValue(0.5)
        self.arrows = pg.PlotCurveItem(pen=pg.mkPen((90, 90, 90, 160), width=1),
                                       connect="pairs")
        self.arrows.setZValue(5)
        self.live = pg.ScatterPlotItem(pxMode=True, size=6, pen=pg.mkPen((0, 0, 0), width=1),
                                       brush=pg.mkBrush(255, 255, 255, 180))
        self.live.setZValue(6)
        for item in (self.image, self.sel_image, self.sel_dots, self.ghosts, self.arrows,
                     self.live):
            self.vb.addItem(item, ignoreBounds=True)
        self.mode = "empty"
        self.vb.sigRangeChanged.connect(self.redraw)
        self.vb.sigResized.connect(self.redraw)

    # -- data ---------------------------------------------------------------------------
    def set_points(self, xy: np.ndarray, cat: np.ndarray, colours: np.ndarray,
                   *, autorange: bool = True) -> None:
        """Show new points.

        Parameters
        ----------
        xy : numpy.ndarray
            ``(M, 2)`` positions.
        cat : numpy.ndarray
            ``(M,)`` colour category of each point, ``0..K-1``.
        colours : numpy.ndarray
            ``(K, 4)`` RGBA per category.
        autorange : bool
            Fit the view to the points.
        """
        self.xy = np.asarray(xy, np.float64)
        # a fixed random drawing order: no category hides another in the density image
        self._draw_order = np.random.default_rng(0).permutation(len(self.xy))
        self._place()
        self.selected = np.zeros(len(self.xy), bool)
        self._selo = self.selected
        self._hold = True
        try:
            self.set_colours(cat, colours, redraw=False)
            if autorange:
                self.fit()
        finally:
            self._hold = False
        self.redraw()

    def _place(self) -> None:
        """Keep float32 copies of x and y in drawing order (what a redraw scans)."""
        xyo = self.xy[self._draw_order].astype(np.float32)
        self._xo, self._yo = np.ascontiguousarray(xyo[:, 0]), np.ascontiguousarray(xyo[:, 1])

    def move_points(self, xy: np.ndarray) -> None:
        """Change the positions (same points, same colours), keeping the view."""
        self.xy = np.asarray(xy, np.float64)
        self._place()
        self.redraw()

    def set_colours(self, cat: np.ndarray, colours: np.ndarray, *, redraw: bool = True) -> None:
        """Change the colour categories of the points."""
        self.cat = np.asarray(cat, np.int64)
        self.colours = np.ascontiguousarray(np.asarray(colours, np.ubyte).reshape(-1, 4))
        packed = self.colours.view(np.uint32).reshape(-1) if len(self.colours) else \
            np.zeros(1, np.uint32)
        self._colo = packed[self.cat[self._draw_order]] if self.cat.size else \
            np.zeros(0, np.uint32)
        for item in self.items:
            self.vb.removeItem(item)
        self.items = []
        for k in range(len(self.colours)):
            item = pg.ScatterPlotItem(pxMode=True, size=5, pen=None,
                                      brush=pg.mkBrush(*self.colours[k].tolist()))
            item.setZValue(2)
            self.vb.addItem(item, ignoreBounds=True)
            self.items.append(item)
        if redraw:
            self.redraw()

    def set_selected(self, mask: np.ndarray) -> None:
        """Mark the selected points (bool mask over the points)."""
        self.selected = np.asarray(mask, bool)
        self._selo = self.selected[self._draw_order] if self.selected.size == len(self.xy) \
            else np.zeros(len(self.xy), bool)
        if len(self.xy) and not self._hold:
            self._draw_selection(self._visible_mask())  # the points themselves did not change

    def fit(self) -> None:
        """Fit the view to the points."""
        if len(self.xy) == 0:
            return
        lo, hi = np.nanmin(self.xy, axis=0), np.nanmax(self.xy, axis=0)
        pad = np.maximum((hi - lo) * 0.03, 1e-6)
        self.vb.setRange(QRectF(lo[0] - pad[0], lo[1] - pad[1], hi[0] - lo[0] + 2 * pad[0],
                                hi[1] - lo[1] + 2 * pad[1]), padding=0)

    def set_overlay(self, old: np.ndarray | None, new: np.ndarray | None) -> None:
        """Show PLI edits: ghosts at the old positions and arrows to the new ones."""
        if old is None or new is None or len(old) == 0:
            self.ghosts.setData([], [])
            self.arrows.setData([], [])
            return
        self.ghosts.setData(old[:, 0], old[:, 1])
        rows = np.arange(len(old))
        if rows.size > ARROWS_MAX:
            rows = np.sort(np.random.default_rng(0).choice(rows.size, ARROWS_MAX, False))
        a, b = old[rows], new[rows]
        # the shaft and two barbs at the head (±25°, a sixth of the arrow's length)
        back = (a - b) / 6.0
        barbs = []
        for angle in (np.radians(25), -np.radians(25)):
            c, s_ = np.cos(angle), np.sin(angle)
            barbs.append(b + back @ np.array([[c, s_], [-s_, c]]))
        seg = np.empty((rows.size * 6, 2))
        seg[0::6], seg[1::6] = a, b
        seg[2::6], seg[3::6] = b, barbs[0]
        seg[4::6], seg[5::6] = b, barbs[1]
        self.arrows.setData(seg[:, 0], seg[:, 1])

    def set_live(self, xy: np.ndarray | None) -> None:
        """Show points being dragged (None: none)."""
        if xy is None or len(xy) == 0:
            self.live.setData([], [])
        else:
            shown = xy if len(xy) <= SELECTION_DOTS_MAX else xy[:SELECTION_DOTS_MAX]
            self.live.setData(shown[:, 0], shown[:, 1])

    # -- drawing ----------------------------------------------------------------------------
    def _visible_mask(self) -> np.ndarray:
        (x0, x1), (y0, y1) = self.vb.viewRange()
        xo, yo = self._xo, self._yo
        return (xo >= x0) & (xo <= x1) & (yo >= y0) & (yo <= y1)

    def visible(self) -> np.ndarray:
        """Return the indices of the points inside the visible range (in drawing order)."""
        return self._draw_order[self._visible_mask()]

    def redraw(self, *_args: Any) -> None:
        """Draw the visible points as dots or as a density image (see the module doc)."""
        if self._hold:
            return
        if len(self.xy) == 0:
            for item in self.items:
                item.setData([], [])
            self.image.clear()
            self.sel_image.clear()
            self.sel_dots.setData([], [])
            self.mode = "empty"
            return
        m = self._visible_mask()
        n_vis = int(np.count_nonzero(m))
        if n_vis <= SCATTER_MAX:
            self.mode = "scatter"
            self.image.hide()
            vis = self._draw_order[m]
            cat = self.cat[vis]
            order = np.argsort(cat, kind="stable")
            bounds = np.searchsorted(cat[order], np.arange(len(self.items) + 1))
            for k, item in enumerate(self.items):
                rows = vis[order[bounds[k]:bounds[k + 1]]]
                item.setData(self.xy[rows, 0], self.xy[rows, 1])
                item.show()
        else:
            self.mode = "density"
            for item in self.items:
                item.hide()
            self._density(self._xo[m], self._yo[m], self._colo[m], self.image)
            self.image.show()
        self._draw_selection(m)

    def _draw_selection(self, m: np.ndarray) -> None:
        """Draw the selected visible points (``m``: visible mask in drawing order)."""
        sm = m & self._selo if self._selo.size == m.size else m & False
        n_sel = int(np.count_nonzero(sm))
        if n_sel <= SELECTION_DOTS_MAX:
            self.sel_image.hide()
            rows = self._draw_order[sm]
            self.sel_dots.setData(self.xy[rows, 0], self.xy[rows, 1])
        else:
            self.sel_dots.setData([], [])
            self._density(self._xo[sm], self._yo[sm], None, self.sel_image)
            self.sel_image.show()

    def _density(self, x: np.ndarray, y: np.ndarray, colour: np.ndarray | None,
                 target: pg.ImageItem) -> None:
        """Bin points into an image over the view (``colour`` None: the selection layer)."""
        (x0, x1), (y0, y1) = self.vb.viewRange()
        w = max(8, int(self.vb.width()) // 2)
        h = max(8, int(self.vb.height()) // 2)
        ix = ((x - x0) * np.float32(w / max(x1 - x0, 1e-12))).astype(np.int32)
        iy = ((y - y0) * np.float32(h / max(y1 - y0, 1e-12))).astype(np.int32)
        np.clip(ix, 0, w - 1, out=ix)
        np.clip(iy, 0, h - 1, out=iy)
        row_major = pg.getConfigOption("imageAxisOrder") == "row-major"
        pix = iy * w + ix if row_major else ix * h + iy
        counts = np.bincount(pix, minlength=w * h)
        filled = counts > 0
        packed = np.zeros(w * h, np.uint32)
        rgba = packed.view(np.ubyte).reshape(-1, 4)
        if colour is None:
            rgba[filled] = (0, 0, 0, 200)
        else:
            packed[pix] = colour  # the last drawn point of a bin wins
            alpha = np.log1p(counts[filled]) / np.log1p(max(int(counts.max()), 1))
            rgba[filled, 3] = (90 + 165 * alpha).astype(np.ubyte)
        target.setImage(rgba.reshape((h, w, 4) if row_major else (w, h, 4)), autoLevels=False)
        target.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))

    def point_at(self, x: float, y: float, radius_px: float = 6.0) -> int:
        """Return the index of the point nearest to map ``(x, y)`` within a few pixels (-1)."""
        if len(self.xy) == 0:
            return -1
        (x0, x1), (y0, y1) = self.vb.viewRange()
        rx = radius_px * (x1 - x0) / max(self.vb.width(), 1)
        ry = radius_px * (y1 - y0) / max(self.vb.height(), 1)
        dx = (self.xy[:, 0] - x) / max(rx, 1e-12)
        dy = (self.xy[:, 1] - y) / max(ry, 1e-12)
        near = np.flatnonzero((np.abs(dx) <= 1) & (np.abs(dy) <= 1))
        if near.size == 0:
            return -1
        return int(near[np.argmin(dx[near] ** 2 + dy[near] ** 2)])
