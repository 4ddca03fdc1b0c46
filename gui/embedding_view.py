"""The embedding view: a linked 2-D map of the cells with lasso, PLI edits, ALI/PALI, retraining.

A dock beside the gallery (paper 2's interactive interventions; PatchSorter's and
FiftyOne's linked embedding panels). It shows one map (an embedding model's openTSNE
projection, or for QPI projects the active classifier's penultimate features mapped with
openTSNE; see :mod:`hemalens.engine.embed.view`) coloured by given label, predicted class,
confidence, decision, correctness, sample or fold.

- **Selection** by lasso, rectangle or click (Shift adds, Ctrl removes) is the review
  session's: the gallery and the inspector follow it, and a selection made there is drawn
  here. The review keys (1-9, Space, X, U) act on a selection made here, through the
  session, so Ctrl+Z undoes them from any view.
- **PLI edits** on the selection (drag: shift, Shift+drag: rotate, wheel: contract or
  expand) are kept as the engine's :class:`~hemalens.engine.embed.pli.PLISession`, saved
  after every edit beside the map (``*.pli.json``), drawn as ghosts and arrows, listed,
  removable and undoable on the window's undo stack. "Retrain with my edits" trains an
  embedding network with the triplet loss plus the edited positions as targets.
- **ALI / PALI**: types, strengths, class weights and α; a step-by-step preview on the
  current map with the validation macro-F1 per iteration; "Retrain" with the chosen loss.
- **Runs**: live curves per fold, cancel, the before/after maps with their test macro-F1
  and the number of cells that changed neighbourhood, the list of runs, make one active.

Every long step runs through ``gui.workers.start_job``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.embedding_panels import EditsPanel, InterventionPanel, RunsPanel
from hemalens.gui.embedding_scatter import MapPlot
from hemalens.gui.palette import DECISION_MARKS, class_colour
from hemalens.gui.workers import Job, one_line_message, start_job

log = logging.getLogger(__name__)

COLOUR_BY = (("given", "Given label"), ("predicted", "Predicted class"),
             ("confidence", "Confidence"), ("decision", "Decision"),
             ("correctness", "Correctness"), ("sample", "Sample"), ("fold", "Fold"))
#: Wheel step of a contract/expand edit (share of the spread).
WHEEL_STEP = 0.1
#: Button rotation, radians.
ROTATE_STEP = math.radians(15)
_GREY = (158, 158, 158, 200)
#: Maps with more points read and write their PLI file in the background (JSON of every
#: point: about 0.8 s at 100k points, 11 s at 1M on the 2-core machine).
SYNC_PLI_MAX = 50_000


# -- jobs (run in the worker; the engine imports torch there, never here) ----------------------
def embed_train_job(project: str, options: dict[str, Any], progress: Any = None
                    ) -> dict[str, Any]:
    """Train an embedding network (``hemalens embed train``) in the worker."""
    from hemalens.engine.workflows.embed import embed_train_project

    return embed_train_project(project, progress=progress, **options)


def feature_map_job(project: str, model: str | None, progress: Any = None) -> dict[str, Any]:
    """Compute the classifier's feature map (QPI) in the worker."""
    from hemalens.engine.embed.view import compute_feature_map

    return compute_feature_map(project, model, progress=progress)


def preview_job(project: str, ids: np.ndarray, xy: np.ndarray, labels: np.ndarray,
                options: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run the step-by-step intervention preview on the labelled cells of a map."""
    from hemalens.engine.embed.store import cell_regions
    from hemalens.engine.embed.view import intervention_preview
    from hemalens.engine.project.store import Project

    with Project.open(project) as p:
        groups = cell_regions(p)[ids]
    used, y = np.unique(labels, return_inverse=True)
    return intervention_preview(xy, y.astype(np.int64), groups, progress=progress, **options)


def compare_job(project: str, before: str | None, after: str, progress: Any = None
                ) -> dict[str, Any]:
    """Compare two maps: test macro-F1 of both, cells whose neighbourhood changed."""
    from hemalens.engine.embed.view import load_map, neighbourhood_changed

    new = load_map(project, after)
    out: dict[str, Any] = {"after_xy": new.xy, "after_ids": new.ids,
                           "after_f1": new.meta.get("metrics", {}).get("mean_f1"),
                           "before_xy": None, "before_ids": None, "before_f1": None,
                           "changed": 0, "compared": 0}
    if before is None:
        return out
    old = load_map(project, before)
    out["before_xy"], out["before_ids"] = old.xy, old.ids
    out["before_f1"] = old.meta.get("metrics", {}).get("mean_f1")
    common, ia, ib = np.intersect1d(old.ids, new.ids, return_indices=True)
    if common.size > 20000:  # a seeded sample keeps the comparison to seconds
        keep = np.sort(np.random.default_rng(0).choice(common.size, 20000, replace=False))
        ia, ib = ia[keep], ib[keep]
    changed = neighbourhood_changed(old.xy[ia], new.xy[ib])
    out["changed"], out["compared"] = int(changed.sum()), int(changed.size)
    return out


def load_pli_job(path: str, progress: Any = None) -> Any:
    """Read a PLI targets file (``PLISession.load``)."""
    from hemalens.engine.embed.pli import PLISession

    return PLISession.load(path)


def new_pli_job(xy: np.ndarray, ids: np.ndarray, progress: Any = None) -> Any:
    """Build an empty PLI session over a map (its id index takes seconds at 1M points)."""
    from hemalens.engine.embed.pli import PLISession

    return PLISession(xy, ids)


def save_pli_job(pli: Any, path: str, progress: Any = None) -> None:
    """Write a PLI session's targets file, or remove it when there is no edit."""
    if pli.edits:
        pli.save(path)
    else:
        Path(path).unlink(missing_ok=True)


class PLIEditsCommand(QUndoCommand):
    """Replace the view's PLI edits (undo puts the old list back)."""

    def __init__(self, view: EmbeddingView, key: str, before: list, after: list, text: str,
                 merge: Any = None) -> None:
        super().__init__(text)
        self.view, self.key, self.before, self.after, self.merge = view, key, before, after, \
            merge

    def id(self) -> int:  # noqa: D102
        return 1212 if self.merge is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802, D102
        if isinstance(other, PLIEditsCommand) and other.merge == self.merge \
                and other.key == self.key:
            self.after = other.after
            self.setText(other.text())
            return True
        return False

    def redo(self) -> None:  # noqa: D102
        self.view.set_edits(self.after, key=self.key)

    def undo(self) -> None:  # noqa: D102
        self.view.set_edits(self.before, key=self.key)


class EmbeddingView(QWidget):
    """The embedding dock (see the module docstring).

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    undo_stack : QUndoStack, optional
        The window's stack (PLI edits go on it); the view makes its own without one.

    Signals
    -------
    message(str)
        A one-line message for the status bar.
    written()
        A job of this view wrote an embedding model or a map into the project.
    """

    message = Signal(str)
    written = Signal()

    def __init__(self, parent: QWidget | None = None,
                 undo_stack: QUndoStack | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = undo_stack if undo_stack is not None else QUndoStack(self)
        self.session: Any = None
        self.map: Any = None
        self.pos_of = np.zeros(0, np.int64)
        self.pli: Any = None
        self.display_xy = np.zeros((0, 2))
        self.categories: list[str] = []
        self.owns_selection = False
        self.sources: list[dict[str, Any]] = []
        self.train_job: Job | None = None
        self.preview_job_: Job | None = None
        self.map_job: Job | None = None
        self.compare_job_: Job | None = None
        self.pli_job: Job | None = None
        self.save_job: Job | None = None
        self._pending_save: tuple[Any, str] | None = None
        self.preview_frames: list[dict[str, Any]] = []
        self._wheel_merge = 0
        self._thumbs: Any = None

        self.map_combo = QComboBox(self)
        self.map_combo.setToolTip("Which map: an embedding model or the classifier's features")
        self.map_combo.setMinimumContentsLength(24)
        self.colour_combo = QComboBox(self)
        for key, text in COLOUR_BY:
            self.colour_combo.addItem(text, key)
        self.compute_button = QPushButton("Compute feature map", self)
        self.compute_button.setToolTip("Map the active classifier's penultimate features "
                                       "of every cell with openTSNE (in the background)")
        self.tools = QButtonGroup(self)
        tool_row = QHBoxLayout()
        for key, text, tip in (("pan", "Pan", "Drag to pan, wheel to zoom"),
                               ("lasso", "Lasso", "Draw around cells to select them (Shift "
                                                  "adds, Ctrl removes)"),
                               ("rect", "Rectangle", "Drag a rectangle to select"),
                               ("edit", "Edit", "PLI: drag to shift the selection, Shift+drag "
                                                "to rotate it, wheel to contract/expand")):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            b.setProperty("tool", key)
            self.tools.addButton(b)
            tool_row.addWidget(b)
            if key == "lasso":
                b.setChecked(True)
        self.fit_button = QToolButton(self)
        self.fit_button.setText("Fit")
        tool_row.addWidget(self.fit_button)
        tool_row.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(QLabel("Map", self))
        top.addWidget(self.map_combo, 1)
        top.addWidget(QLabel("Colour", self))
        top.addWidget(self.colour_combo)
        top.addWidget(self.compute_button)

        self.plot = MapPlot(self)
        self.plot.vb.set_tool("lasso")
        self.legend = QLabel(self)
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.hover = QLabel(self.plot)
        self.hover.setStyleSheet("background: rgba(255,255,255,220); border: 1px solid #888;"
                                 " padding: 2px;")
        self.hover.hide()
        self.status = QLabel(self)
        self.status.setWordWrap(True)

        left = QWidget(self)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addLayout(top)
        lv.addLayout(tool_row)
        lv.addWidget(self.plot, 1)
        lv.addWidget(self.legend)
        lv.addWidget(self.status)
        self.edits = EditsPanel(self)
        self.interventions = InterventionPanel(self)
        self.runs = RunsPanel(self)
        self.tabs = QTabWidget(self)
        # Each panel scrolls: their controls must not make the dock (and so the whole
        # bottom dock area) taller than the gallery can spare.
        for panel, title in ((self.edits, "Manual (PLI)"),
                             (self.interventions, "Automatic (ALI/PALI)"), (self.runs, "Runs")):
            scroll = QScrollArea(self.tabs)
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(panel)
            self.tabs.addTab(scroll, title)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        self.map_combo.activated.connect(lambda _i: self.load(self.map_combo.currentData()))
        self.colour_combo.currentIndexChanged.connect(lambda _i: self.recolour())
        self.compute_button.clicked.connect(self.compute_feature_map)
        self.tools.buttonClicked.connect(lambda b: self.set_tool(b.property("tool")))
        self.fit_button.clicked.connect(self.plot.fit)
        vb = self.plot.vb
        vb.polygonDone.connect(self._polygon)
        vb.pointClicked.connect(self._clicked)
        vb.editDrag.connect(self._edit_drag)
        vb.editWheel.connect(lambda steps, _p: self.contract(WHEEL_STEP * steps, merge=True))
        self.plot.scene().sigMouseMoved.connect(self._hovered)
        e = self.edits
        e.contract.clicked.connect(lambda: self.contract(WHEEL_STEP))
        e.expand.clicked.connect(lambda: self.contract(-WHEEL_STEP))
        e.rotate_left.clicked.connect(lambda: self.rotate(ROTATE_STEP))
        e.rotate_right.clicked.connect(lambda: self.rotate(-ROTATE_STEP))
        e.remove.clicked.connect(lambda: self.remove_edit(e.list.currentRow()))
        e.clear.clicked.connect(self.remove_all_edits)
        e.retrain.clicked.connect(lambda: self.retrain_with_edits())
        i = self.interventions
        i.preview.clicked.connect(lambda: self.start_preview())
        i.stop.clicked.connect(self.stop_preview)
        i.back.clicked.connect(self.end_preview)
        i.retrain.clicked.connect(lambda: self.retrain())
        self.runs.activate.clicked.connect(lambda: self.make_active(self.runs.selected()))
        self.runs.cancel.clicked.connect(self.cancel_training)
        self.set_session(None)

    # -- session ------------------------------------------------------------------------------
    @property
    def project_path(self) -> str:
        """The open project's folder."""
        return str(self.session.project.path)

    def set_session(self, session: Any) -> None:
        """Show this session's maps (None: nothing)."""
        self.end_preview()
        self.session = session
        self.map = None
        self.pli = None
        self.owns_selection = False
        self.undo_stack_owned_clear()
        if self._thumbs is not None:
            self._thumbs.set_session(session)
        self.refresh_sources(load=True)

    def undo_stack_owned_clear(self) -> None:
        """Drop PLI commands of the previous project from a stack this view owns."""
        if self.undo_stack.parent() is self:
            self.undo_stack.clear()

    def refresh_sources(self, load: bool = False, prefer: str | None = None) -> None:
        """Read the list of maps again; load ``prefer``, the shown one, or the first ready."""
        from hemalens.engine.embed.view import embedding_runs, map_sources

        self.sources = []
        runs: list[dict[str, Any]] = []
        if self.session is not None:
            try:
                self.sources = map_sources(self.project_path)
                runs = embedding_runs(self.project_path)
            except Exception as exc:  # a listing error must not take the window down
                self._say(f"Cannot list the maps: {one_line_message(exc)}")
        current = prefer or (self.map.key if self.map is not None else None)
        self.map_combo.blockSignals(True)
        self.map_combo.clear()
        for s in self.sources:
            self.map_combo.addItem(s["label"], s["key"])
        self.map_combo.blockSignals(False)
        active = next((s["name"] for s in self.sources if s.get("active")), None)
        self.runs.show_runs(runs, active)
        has_features = any(s["kind"] == "features" for s in self.sources)
        self.compute_button.setVisible(has_features)
        self.compute_button.setEnabled(self._editable() and not self._running(self.map_job))
        keys = [s["key"] for s in self.sources if s["ready"]]
        if current in keys and (load or current != getattr(self.map, "key", None)):
            self.load(current)
        elif load or (self.map is not None and self.map.key not in keys):
            self.load(keys[0] if keys else None)
        else:
            self._select_combo()
        self._enable()

    def _select_combo(self) -> None:
        if self.map is not None:
            idx = self.map_combo.findData(self.map.key)
            if idx >= 0:
                self.map_combo.setCurrentIndex(idx)

    def _editable(self) -> bool:
        return self.session is not None and not self.session.store.read_only

    @staticmethod
    def _running(job: Job | None) -> bool:
        return job is not None and job.is_running

    def _enable(self) -> None:
        ok = self._editable() and self.map is not None
        training = self._running(self.train_job)
        has_edits = self.pli is not None and bool(self.pli.edits)
        for b in (self.edits.contract, self.edits.expand, self.edits.rotate_left,
                  self.edits.rotate_right):
            b.setEnabled(ok)
        self.edits.retrain.setEnabled(ok and has_edits and not training)
        self.interventions.retrain.setEnabled(self._editable() and not training)
        previewing = self._running(self.preview_job_)
        self.interventions.preview.setEnabled(ok and not previewing)
        self.interventions.stop.setEnabled(previewing)
        self.runs.cancel.setEnabled(training)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.message.emit(text)

    # -- loading a map -----------------------------------------------------------------------
    def load(self, key: str | None) -> bool:
        """Show the map ``key`` (None: nothing). Returns whether a map is shown."""
        from hemalens.engine.embed.view import load_map

        self.end_preview()
        self.map, self.pli = None, None
        if self.session is None or key is None:
            self.pos_of = np.zeros(0, np.int64)
            self.display_xy = np.zeros((0, 2))
            self.plot.set_points(self.display_xy, np.zeros(0, np.int64), np.zeros((0, 4)))
            self.plot.set_overlay(None, None)
            self.edits.show_edits(())
            self.legend.setText("")
            if self.session is None:
                self.status.setText("No project open")
            elif any(s["kind"] == "features" for s in self.sources):
                self.status.setText("No map yet: compute the classifier's feature map, or "
                                    "train an embedding network (Automatic tab).")
            else:
                self.status.setText("No map yet: train a classifier or an embedding network.")
            self._enable()
            return False
        try:
            self.map = load_map(self.project_path, key)
        except Exception as exc:
            self._say(f"Cannot show the map: {one_line_message(exc)}")
            return self.load(None)
        m = self.map
        self.pos_of = np.full(self.session.n_cells, -1, np.int64)
        self.pos_of[m.ids] = np.arange(m.ids.size)
        self._load_pli()
        self.display_xy = self._edited_xy()
        cat, colours = self._categories()
        self.plot.set_points(self.display_xy, cat, colours)
        self._show_overlay()
        self.selection_changed(self.session.selection, None)
        self._select_combo()
        self.status.setText(f"{m.ids.size:,} cells on the map")
        self._enable()
        return True

    # -- colours ---------------------------------------------------------------------------------
    def _categories(self) -> tuple[np.ndarray, np.ndarray]:
        """Category of every point and the RGBA of each category (also fills the legend)."""
        s, ids = self.session, self.map.ids
        mode = self.colour_combo.currentData()

        def rgba(c: QColor, a: int = 200) -> tuple[int, int, int, int]:
            return (c.red(), c.green(), c.blue(), a)

        if mode in ("given", "predicted"):
            codes = (s.labels if mode == "given" else s.predicted)[ids].astype(np.int64)
            k = len(s.classes)
            cat = np.where((codes >= 0) & (codes < k), codes, k)
            names = [*s.classes, "no label" if mode == "given" else "no prediction"]
            cols = [rgba(class_colour(c)) for c in range(k)] + [_GREY]
        elif mode == "confidence":
            conf = s.confidence[ids]
            cat = np.where(np.isfinite(conf), np.clip((np.nan_to_num(conf) * 5).astype(
                np.int64), 0, 4), 5)
            cmap = pg.colormap.get("viridis")
            cols = [tuple(int(v) for v in cmap.map(k / 4, mode="byte")[:3]) + (200,)
                    for k in range(5)] + [_GREY]
            names = ["< 0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "≥ 0.8", "none"]
        elif mode == "decision":
            from hemalens.engine.project.annotations import DECISIONS

            cat = s.decisions[ids].astype(np.int64)
            names = list(DECISIONS)
            cols = [rgba(QColor(DECISION_MARKS.get(d, ("", "#9E9E9E", ""))[1])) for d in names]
        elif mode == "correctness":
            lab, pred = s.labels[ids], s.predicted[ids]
            known = (lab >= 0) & (pred >= 0)
            cat = np.where(known, np.where(lab == pred, 0, 1), 2)
            names = ["correct", "wrong", "no label or prediction"]
            cols = [(0, 158, 115, 200), (213, 94, 0, 230), _GREY]
        elif mode == "sample":
            names_, cat = np.unique(s.samples[ids], return_inverse=True)
            names = [str(n) or "(none)" for n in names_]
            cols = [rgba(class_colour(k)) for k in range(len(names))]
        else:  # fold
            fold = self.map.fold.astype(np.int64)
            k = int(fold.max()) + 1 if fold.size and fold.max() >= 0 else 0
            cat = np.where(fold >= 0, fold, k)
            names = [f"fold {f + 1}" for f in range(k)] + ["not in training"]
            cols = [rgba(class_colour(f)) for f in range(k)] + [_GREY]
        counts = np.bincount(cat, minlength=len(names))
        self.categories = names
        self.legend.setText("  ".join(
            f"<span style='color: rgb({c[0]},{c[1]},{c[2]})'>■</span> {n} ({counts[i]:,})"
            for i, (n, c) in enumerate(zip(names, cols, strict=True)) if counts[i]))
        return cat.astype(np.int64), np.asarray(cols, np.ubyte)

    def recolour(self) -> None:
        """Colour the points again (labels, predictions or the colour choice changed)."""
        if self.map is not None:
            self.plot.set_colours(*self._categories())

    def cells_changed(self, ids: np.ndarray) -> None:
        """Labels or decisions of these cells changed."""
        if self.map is not None and self.colour_combo.currentData() in (
                "given", "decision", "correctness"):
            self.recolour()

    def predictions_changed(self) -> None:
        """Other predictions are shown (the active classifier may have changed)."""
        self.recolour()
        self.refresh_sources()

    # -- selection ---------------------------------------------------------------------------
    def selection_changed(self, ids: Any, source: Any) -> None:
        """Draw the session's selection (made here or in another view)."""
        self.owns_selection = source is self
        if self.map is None:
            return
        mask = np.zeros(self.map.ids.size, bool)
        sel = np.asarray(ids, np.int64)
        if sel.size:
            p = self.pos_of[sel[(sel >= 0) & (sel < self.pos_of.size)]]
            mask[p[p >= 0]] = True
        self.plot.set_selected(mask)

    def selected_rows(self) -> np.ndarray:
        """Map rows of the selected cells."""
        return np.flatnonzero(self.plot.selected) if self.plot.selected.size else \
            np.zeros(0, np.int64)

    def select_rows(self, rows: np.ndarray, modifiers: Any = None) -> None:
        """Make map rows the session's selection (Shift adds, Ctrl removes)."""
        if self.session is None or self.map is None:
            return
        cells = self.map.ids[np.asarray(rows, np.int64)]
        mods = modifiers if modifiers is not None else Qt.KeyboardModifier.NoModifier
        if mods & Qt.KeyboardModifier.ShiftModifier:
            cells = np.union1d(self.session.selection, cells)
        elif mods & Qt.KeyboardModifier.ControlModifier:
            cells = np.setdiff1d(self.session.selection, cells)
        self.session.select(cells, source=self)
        self.owns_selection = True
        n = len(cells)
        self.status.setText(f"{n:,} cells selected" + (" — keys 1–9, Space, X, U act on them"
                                                       if n else ""))

    def select_polygon(self, vertices: np.ndarray, modifiers: Any = None) -> np.ndarray:
        """Select the cells inside a polygon in map coordinates; returns their ids."""
        from hemalens.engine.embed.view import points_in_polygon

        if self.map is None:
            return np.zeros(0, np.int64)
        rows = points_in_polygon(self.display_xy, vertices)
        self.select_rows(rows, modifiers)
        return self.map.ids[rows]

    def _polygon(self, vertices: np.ndarray, modifiers: Any) -> None:
        self.select_polygon(vertices, modifiers)

    def _clicked(self, x: float, y: float, modifiers: Any) -> None:
        if self.map is None:
            return
        row = self.plot.point_at(x, y)
        if row < 0:
            if not modifiers & (Qt.KeyboardModifier.ShiftModifier
                                | Qt.KeyboardModifier.ControlModifier):
                self.select_rows(np.zeros(0, np.int64))
            return
        if modifiers & Qt.KeyboardModifier.ControlModifier and self.plot.selected[row]:
            self.select_rows(np.array([row]), modifiers)
        else:
            mods = modifiers & Qt.KeyboardModifier.ShiftModifier
            if modifiers & Qt.KeyboardModifier.ControlModifier:
                mods = Qt.KeyboardModifier.ShiftModifier
            self.select_rows(np.array([row]), mods)

    def _hovered(self, pos: QPointF) -> None:
        if self.map is None or not self.plot.sceneBoundingRect().contains(pos):
            self.hover.hide()
            return
        p = self.plot.vb.mapSceneToView(pos)
        row = self.plot.point_at(p.x(), p.y())
        if row < 0:
            self.hover.hide()
            return
        self.show_hover(row)

    def show_hover(self, row: int) -> None:
        """Show the thumbnail and id of the cell at map row ``row``."""
        from hemalens.gui.gallery import GalleryData

        if self._thumbs is None:
            self._thumbs = GalleryData(self.session, thumb_size=72, cache_size=500)
        cell = int(self.map.ids[row])
        pix = self._thumbs.thumbnail(cell)
        s = self.session
        lab = int(s.labels[cell])
        name = s.classes[lab] if 0 <= lab < len(s.classes) else "no label"
        self.hover.setPixmap(pix)
        self.hover.setAccessibleName(f"cell {cell}")
        self.hover.adjustSize()
        self.hover.move(8, 8)
        self.hover.show()
        self.hover.raise_()
        self.plot.setToolTip(f"cell {cell} · {name}")
        self.status.setText(f"cell {cell} · {name} · predicted "
                            f"{s.predicted_names[cell] or '—'}")

    # -- PLI ------------------------------------------------------------------------------------
    def _pli_file(self, key: str | None = None) -> Path:
        from hemalens.engine.embed.view import pli_path

        return pli_path(self.project_path, key or self.map.key)

    def _load_pli(self) -> None:
        """Restore the map's saved edits (in the background for large maps)."""
        self.pli = None
        self.edits.show_edits(())
        path = self._pli_file()
        key = self.map.key
        if not path.exists():
            if self.map.ids.size > SYNC_PLI_MAX:  # ready before the first edit
                self.pli_job = start_job(new_pli_job, self.map.xy, self.map.ids,
                                         title="Preparing PLI edits", parent=self,
                                         show_dialog=False, transient=True, show_errors=False,
                                         on_result=lambda pli: self._prepared_pli(pli, key))
            return
        if self.map.ids.size <= SYNC_PLI_MAX:
            try:
                self._restore_pli(load_pli_job(str(path)), self.map.key)
            except Exception as exc:
                self._say(f"PLI edits not restored — {one_line_message(exc)}")
            return
        self._say(f"Reading the PLI edits of {key.partition(':')[2]}…")
        self.pli_job = start_job(load_pli_job, str(path), title="Reading PLI edits",
                                 parent=self, show_dialog=False, transient=True,
                                 show_errors=False,
                                 on_result=lambda pli: self._restore_pli(pli, key),
                                 on_error=lambda exc: self._say(
                                     f"PLI edits not restored — {one_line_message(exc)}"))

    def _prepared_pli(self, pli: Any, key: str) -> None:
        if self.map is not None and self.map.key == key and self.pli is None:
            self.pli = pli

    def _restore_pli(self, pli: Any, key: str) -> None:
        if self.map is None or self.map.key != key:
            return
        same = (pli.cell_ids.shape == self.map.ids.shape
                and np.array_equal(pli.cell_ids, self.map.ids)
                and np.allclose(pli.points, self.map.xy, atol=1e-6))
        if not same:
            self._say(f"{self._pli_file()}: the edits belong to another version of this "
                      "map; they are not shown")
            return
        self.pli = pli
        self.display_xy = self._edited_xy()
        self.plot.move_points(self.display_xy)
        self._show_overlay()
        self.edits.show_edits(self.pli.edits)
        self._enable()

    def _save_pli(self) -> None:
        """Write the edits (in the background for large maps; saves never overlap)."""
        path = self._pli_file()
        snapshot = self.pli
        if self.map.ids.size <= SYNC_PLI_MAX:
            try:
                save_pli_job(snapshot, str(path))
            except Exception as exc:
                self._say(f"Cannot save the edits: {one_line_message(exc)}")
            return
        self._pending_save = (snapshot, str(path))
        if not self._running(self.save_job):
            self._next_save()

    def _next_save(self) -> None:
        if self._pending_save is None:
            return
        snapshot, path = self._pending_save
        self._pending_save = None
        self.save_job = start_job(save_pli_job, snapshot, path, title="Saving PLI edits",
                                  parent=self, show_dialog=False, transient=False)
        self.save_job.ended.connect(lambda _state: self._next_save())

    @property
    def saving(self) -> bool:
        """Whether edits are still being written."""
        return self._running(self.save_job) or self._pending_save is not None

    def _edited_xy(self) -> np.ndarray:
        if self.pli is None or not self.pli.edits:
            return self.map.xy
        return self.pli.targets()[0]

    def _show_overlay(self) -> None:
        if self.pli is None or not self.pli.edits:
            self.plot.set_overlay(None, None)
            return
        targets, mask = self.pli.targets()
        self.plot.set_overlay(self.map.xy[mask], targets[mask])

    @property
    def edit_list(self) -> list[Any]:
        """The PLI edits of the shown map, in order."""
        return list(self.pli.edits) if self.pli is not None else []

    def set_edits(self, edits: list[Any], key: str | None = None) -> None:
        """Replace the PLI edits of a map and save them (the undo commands call this)."""
        from hemalens.engine.embed.pli import PLISession

        if key is not None and (self.map is None or key != self.map.key):
            self._say("The edits belong to another map; show it to undo them")
            return
        if self.pli is None:
            self.pli = PLISession(self.map.xy, self.map.ids)
        self.pli = self.pli.with_edits(edits)  # a save in progress keeps its own session
        self._save_pli()
        self.display_xy = self._edited_xy()
        self.plot.move_points(self.display_xy)
        self._show_overlay()
        self.edits.show_edits(self.pli.edits)
        self._enable()

    def _push(self, after: list[Any], text: str, merge: Any = None) -> None:
        self.undo_stack.push(PLIEditsCommand(self, self.map.key, self.edit_list, after, text,
                                             merge))

    def add_edit(self, edit: Any, merge: Any = None) -> None:
        """Append a PLI edit (undoable on the window's stack)."""
        from hemalens.gui.embedding_panels import describe_edit

        if edit.is_identity:
            return
        self._push([*self.edit_list, edit], describe_edit(edit), merge)

    def _selection_for_edit(self) -> np.ndarray | None:
        if not self._editable() or self.map is None:
            return None
        rows = self.selected_rows()
        if rows.size == 0:
            self._say("Select cells first (lasso, rectangle or click), then edit them")
            return None
        return rows

    def shift(self, vector: tuple[float, float]) -> None:
        """Shift the selection by ``vector`` (map units)."""
        from hemalens.engine.embed.pli import PLIEdit

        rows = self._selection_for_edit()
        if rows is not None:
            self.add_edit(PLIEdit(self.map.ids[rows], "shift", vector=np.asarray(vector)))

    def rotate(self, angle: float) -> None:
        """Rotate the selection about its centre by ``angle`` radians (counter-clockwise)."""
        from hemalens.engine.embed.pli import PLIEdit

        rows = self._selection_for_edit()
        if rows is not None:
            self.add_edit(PLIEdit(self.map.ids[rows], "rotate", angle=float(angle)))

    def contract(self, step: float, merge: bool = False) -> None:
        """Contract the selection towards its centre by ``step`` (negative: expand).

        With ``merge`` (the wheel), consecutive steps on the same cells become one edit.
        """
        from hemalens.engine.embed.pli import MIN_FACTOR, PLIEdit

        rows = self._selection_for_edit()
        if rows is None:
            return
        cells = self.map.ids[rows]
        edits = self.edit_list
        scale = 1.0 - step
        last = edits[-1] if edits else None
        key = ("contract", hash(cells.tobytes()))
        stack_top = self.undo_stack.command(self.undo_stack.index() - 1) \
            if self.undo_stack.index() > 0 else None
        if (merge and last is not None and last.kind == "contract"
                and np.array_equal(last.cells, np.unique(cells))
                and isinstance(stack_top, PLIEditsCommand) and stack_top.merge == key):
            scale *= 1.0 - last.factor
            edits = edits[:-1]
        factor = float(np.clip(1.0 - scale, MIN_FACTOR, 0.99))
        edit = PLIEdit(cells, "contract", factor=factor)
        from hemalens.gui.embedding_panels import describe_edit

        self._push([*edits, edit], describe_edit(edit), key if merge else None)

    def _edit_drag(self, start: tuple, here: tuple, rotating: bool, finished: bool) -> None:
        rows = self.selected_rows()
        if self.map is None or rows.size == 0:
            if finished:
                self._selection_for_edit()
            return
        pts = self.display_xy[rows]
        if rotating:
            c = pts.mean(axis=0)
            angle = math.atan2(here[1] - c[1], here[0] - c[0]) - math.atan2(
                start[1] - c[1], start[0] - c[0])
            cos, sin = math.cos(angle), math.sin(angle)
            new = c + (pts - c) @ np.array([[cos, sin], [-sin, cos]])
        else:
            vec = np.subtract(here, start)
            new = pts + vec
        if not finished:
            self.plot.set_live(new)
            return
        self.plot.set_live(None)
        if rotating:
            self.rotate(angle)
        else:
            self.shift((float(vec[0]), float(vec[1])))

    def remove_edit(self, index: int) -> None:
        """Remove one edit from the list (undoable)."""
        edits = self.edit_list
        if not 0 <= index < len(edits):
            return
        from hemalens.gui.embedding_panels import describe_edit

        self._push(edits[:index] + edits[index + 1:], f"Remove: {describe_edit(edits[index])}")

    def remove_all_edits(self) -> None:
        """Remove every edit of the map (undoable)."""
        if self.edit_list:
            self._push([], f"Remove {len(self.edit_list)} PLI edits")

    def set_tool(self, tool: str) -> None:
        """Choose the left-button tool: ``pan``, ``lasso``, ``rect`` or ``edit``."""
        self.plot.vb.set_tool(tool)
        for b in self.tools.buttons():
            b.setChecked(b.property("tool") == tool)

    # -- jobs: feature map, training, comparison --------------------------------------------
    def compute_feature_map(self) -> Job | None:
        """Map the active classifier's features (QPI) in the background."""
        if not self._editable() or self._running(self.map_job):
            return None
        model = next((s["name"] for s in self.sources if s["kind"] == "features"), None)
        if model is None:
            self._say("No classifier to map: train one first (Model menu)")
            return None
        self.compute_button.setEnabled(False)

        def done(r: dict[str, Any]) -> None:
            self.written.emit()
            self._say(f"Mapped {r['cells']:,} cells by the {r['n_features']} features of "
                      f"{r['model']}")
            self.refresh_sources(prefer=f"features:{r['model']}", load=True)

        self.map_job = start_job(feature_map_job, self.project_path, model,
                                 title="Mapping the classifier's features", parent=self,
                                 show_dialog=False, on_result=done)
        self.map_job.ended.connect(lambda _s: self._enable_compute())
        return self.map_job

    def _enable_compute(self) -> None:
        self.compute_button.setEnabled(self._editable())

    def retrain_with_edits(self, options: dict[str, Any] | None = None) -> Job | None:
        """Train an embedding network with the triplet loss plus the PLI targets."""
        if self.pli is None or not self.pli.edits:
            self._say("No PLI edits to train with")
            return None
        opts = {**self.edits.form.options(), **(options or {})}
        opts.update(loss=opts.get("loss", "tml"), pli_targets=str(self._pli_file()))
        return self.retrain(opts)

    def retrain(self, options: dict[str, Any] | None = None) -> Job | None:
        """Train an embedding network in the background (options: ``embed_train_project``)."""
        if not self._editable() or self._running(self.train_job):
            return None
        opts = {**self.interventions.options(), **(options or {})}
        before = self.map.key if self.map is not None else None
        self.runs.start(f"Training {str(opts.get('loss', '')).upper()}"
                        + (" with PLI targets" if opts.get("pli_targets") else "") + "…")
        self.tabs.setCurrentIndex(2)  # the runs (each panel sits in a scroll area)
        job = start_job(embed_train_job, self.project_path, opts,
                        title="Training an embedding network", parent=self, show_dialog=False,
                        on_result=lambda r: self._trained(r, before))
        job.reported.connect(self._train_report)
        job.ended.connect(self._train_ended)
        self.train_job = job
        self._enable()
        return job

    def _train_report(self, record: Any) -> None:
        if isinstance(record, dict) and record.get("kind") == "embed_epoch":
            self.runs.add_epoch(record)

    def _train_ended(self, state: str) -> None:
        if state != "done":
            self.runs.state.setText(f"Training {state}"
                                    + (": nothing was saved" if state == "cancelled" else ""))
        self._enable()

    def cancel_training(self) -> None:
        """Cancel the running training (nothing is written)."""
        if self._running(self.train_job):
            self.train_job.cancel()

    def _trained(self, result: dict[str, Any], before: str | None) -> None:
        from hemalens.engine.embed.view import set_active_embedding

        name = result["model"]
        self.written.emit()
        try:
            set_active_embedding(self.project_path, name)
        except Exception as exc:
            self._say(f"Trained {name}, but cannot make it active: {one_line_message(exc)}")
        self.runs.state.setText(f"Trained {name}: test macro-F1 {result['mean_f1']:.3f} ± "
                                f"{result['std_f1']:.3f} over {len(result['folds'])} folds")
        self.refresh_sources(prefer=f"embedding:{name}", load=True)
        self.compare_job_ = start_job(compare_job, self.project_path, before,
                                      f"embedding:{name}", title="Comparing the maps",
                                      parent=self, show_dialog=False, transient=True,
                                      on_result=self._compared)

    def _compared(self, result: dict[str, Any]) -> None:
        """Show the before/after maps coloured by the cells' current labels."""
        if self.session is not None:
            k = len(self.session.classes)
            for key in ("before", "after"):
                ids = result.get(f"{key}_ids")
                if ids is not None:
                    lab = self.session.labels[ids].astype(np.int64)
                    result[f"{key}_cat"] = np.where((lab >= 0) & (lab < k), lab, k)
            result["colours"] = [class_colour(c) for c in range(k)] + [QColor(*_GREY)]
        self.runs.show_comparison(result)

    def make_active(self, name: str | None) -> None:
        """Make an earlier run the active embedding and show its map."""
        from hemalens.engine.embed.view import set_active_embedding

        if name is None or not self._editable():
            return
        try:
            set_active_embedding(self.project_path, name)
        except Exception as exc:
            self._say(f"Cannot make {name} active: {one_line_message(exc)}")
            return
        self.refresh_sources(prefer=f"embedding:{name}", load=True)
        self._say(f"{name} is the active embedding")

    # -- the ALI/PALI preview -------------------------------------------------------------------
    def start_preview(self, options: dict[str, Any] | None = None) -> Job | None:
        """Preview automatic interventions on the labelled cells of the map, step by step."""
        if self.map is None or self._running(self.preview_job_):
            return None
        panel = self.interventions
        types = panel.chosen_types()
        if not types:
            self._say("Tick at least one intervention type")
            return None
        s = self.session
        labels = s.labels[self.map.ids].astype(np.int64)
        rows = np.flatnonzero((labels >= 0) & s.qc[self.map.ids])
        if np.unique(labels[rows]).size < 2:
            self._say("The preview needs labelled cells of at least two classes on the map")
            return None
        opts = {"types": types, "lambda_c": panel.lambda_c.value(),
                "lambda_s": panel.lambda_s.value(), "iterations": panel.iterations.value(),
                **(options or {})}
        self._preview_rows = rows
        self._preview_base = self.display_xy.copy()
        self.preview_frames = []
        panel.back.setEnabled(True)
        panel.state.setText("Preparing the preview (SVM parameters per fold)…")
        job = start_job(preview_job, self.project_path, self.map.ids[rows],
                        self.display_xy[rows], labels[rows], opts,
                        title="Previewing interventions", parent=self, show_dialog=False,
                        transient=True, min_interval=0.0)
        job.reported.connect(self._preview_frame)
        job.ended.connect(self._preview_ended)
        self.preview_job_ = job
        self._enable()
        return job

    def _preview_frame(self, record: Any) -> None:
        if not isinstance(record, dict) or record.get("kind") != "preview" or self.map is None:
            return
        if not hasattr(self, "_preview_base"):
            return
        self.preview_frames.append({"iteration": record["iteration"], "f1": record["f1"]})
        xy = self._preview_base.copy()
        xy[self._preview_rows] = record["points"]
        self.plot.move_points(xy)
        f1 = [f["f1"] for f in self.preview_frames]
        self.interventions.show_curve(f1)
        self.interventions.state.setText(
            f"Iteration {record['iteration']}: validation macro-F1 {record['f1']:.3f} "
            f"(before: {f1[0]:.3f})")

    def _preview_ended(self, state: str) -> None:
        if state == "cancelled":
            self.interventions.state.setText(self.interventions.state.text() + " — stopped")
        elif state == "failed":
            self.interventions.state.setText("The preview failed; see the message")
        self._enable()

    def stop_preview(self) -> None:
        """Stop the preview (the last frame stays shown)."""
        if self._running(self.preview_job_):
            self.preview_job_.cancel()

    def end_preview(self) -> None:
        """Stop the preview and show the map as it is."""
        self.stop_preview()
        if hasattr(self, "_preview_base"):
            del self._preview_base
            if self.map is not None:
                self.plot.move_points(self.display_xy)
        self.interventions.back.setEnabled(False)

    # -- for the screenshot script --------------------------------------------------------------
    def demo_state(self) -> bool:
        """Put the view in a representative state: a lasso selection and one PLI edit.

        Selects the cells of the largest class inside a polygon around its centre and
        shifts them by an eighth of the map's width (an edit saved like any other; Ctrl+Z
        takes it back). A QPI project without a map gets its classifier's feature map
        computed first, in the background: the call then returns False and
        :attr:`map_job` is the job to wait for before calling again.

        Returns
        -------
        bool
            Whether the view now shows the selection and the edit.
        """
        if self.map is None:
            self.refresh_sources(load=True)
        if self.map is None:
            if not self._running(self.map_job):
                self.compute_feature_map()
            return False
        self.set_tool("lasso")
        xy, labels = self.display_xy, self.session.labels[self.map.ids]
        known = labels[labels >= 0]
        cls = int(np.bincount(known).argmax()) if known.size else -1
        pts = xy[labels == cls] if cls >= 0 else xy
        c = np.median(pts, axis=0)
        r = np.percentile(np.linalg.norm(pts - c, axis=1), 60)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        poly = c + np.c_[r * np.cos(t), r * 0.8 * np.sin(t)]
        self.select_polygon(poly)
        if self._editable() and self.selected_rows().size:
            width = float(np.ptp(xy[:, 0])) if len(xy) else 1.0
            self.shift((width / 8, width / 16))
            self.plot.fit()
        return bool(self.selected_rows().size) and bool(self.edit_list)
