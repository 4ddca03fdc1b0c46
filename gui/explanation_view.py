"""The "Explanation" section of the cell inspector: one cell's map over its patch.

Maps are looked up in the project's cache (``/explanations``) and otherwise computed in
the background, one cell at a time, through :func:`hemalens.gui.workers.start_job`. At most
one such job runs; a newer request waits as the single pending one (it replaces any older
pending request), and a result for a cell that is no longer shown is kept in the in-memory
LRU but not displayed. The engine's explanation modules import torch, so they are imported
inside the worker functions only: the window opens without torch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.workers import Job, configured_cluster, one_line_message, start_job

log = logging.getLogger(__name__)

#: Combo-box order and labels; keys are the engine's method names (``explain.METHODS``).
METHOD_LABELS: dict[str, str] = {
    "lime": "LIME",
    "saliency": "Saliency",
    "guided-backprop": "Guided backprop",
    "gradcam": "Grad-CAM",
    "guided-gradcam": "Guided Grad-CAM",
    "occlusion": "Occlusion",
}
#: Data of the class combo's first item: the class a person sees (the prediction).
PREDICTED = "predicted"
#: Seed of LIME's perturbations; the same as ``hemalens explain`` so the cache is shared.
SEED = 0
#: Entries kept in the in-memory LRU (a 64 px map + overlay is about 80 kB).
LRU_SIZE = 256
NO_MODEL = "no model in this project — train one first"
#: Colours of :data:`hemalens.engine.explain.render.DIVERGING` (blue +, red -).
LEGEND = ("<span style='color:#0f45d9'>■</span> blue: for the class &nbsp; "
          "<span style='color:#cc0f0f'>■</span> red: against")


# -- engine side: plain functions run in the worker thread -------------------------------




@dataclass
class LoadedModel:
    """A model loaded in a worker, kept by the view for the next requests.

    Attributes
    ----------
    model : Classifier
        The torch model (CPU, eval mode).
    info : dict
        ``{"name", "created", "class_names"}`` as :func:`active_model_info`.
    predicted : numpy.ndarray or None
        Stored calibrated predictions of this model (``hemalens predict``), per cell.
    methods : tuple of str
        Methods that apply to the model (``methods_for``).
    reasons : dict of str to str
        Why each other method does not apply.
    """

    model: Any
    info: dict[str, Any]
    predicted: np.ndarray | None
    methods: tuple[str, ...]
    reasons: dict[str, str]

    @property
    def key(self) -> tuple[str, str]:
        """``(name, created)``: identifies this version of the model."""
        return self.info["name"], self.info["created"]


def load_explainer(project_path: str | Path, progress: Any = None) -> LoadedModel:
    """Load the active model, its stored predictions and its applicable methods.

    Parameters
    ----------
    project_path : str or Path
        The project file.
    progress : Progress, optional
        Checked for cancellation before loading.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ProjectError
        No model, or an unreadable project.
    """
    from hemalens.engine.explain.gradients import NotApplicable, cam_layer
    from hemalens.engine.explain.methods import METHODS, methods_for
    from hemalens.engine.jobs import checkpoint
    from hemalens.engine.models.store import load_model
    from hemalens.engine.review.predictions import read_predictions

    checkpoint(progress)
    model, meta = load_model(project_path)
    info = {"name": meta["name"], "created": str(meta["created"]),
            "class_names": [str(c) for c in meta["class_names"]]}
    found = read_predictions(project_path, meta["name"])
    predicted = None if found is None else np.asarray(found[0]["predicted"], np.int64)
    methods = methods_for(model)
    reasons: dict[str, str] = {}
    for m in METHODS:
        if m not in methods:
            try:
                cam_layer(model)
                reasons[m] = "does not apply to this model"
            except NotApplicable as exc:
                reasons[m] = str(exc)
    return LoadedModel(model, info, predicted, methods, reasons)


def explain_one(
    project_path: str | Path,
    loaded: LoadedModel | None,
    method: str,
    cell: int,
    patch: np.ndarray,
    target: int | None,
    *,
    seed: int = SEED,
    progress: Any = None,
) -> dict[str, Any]:
    """Explanation map and overlay of one cell: from the project's cache, else computed.

    Parameters
    ----------
    project_path : str or Path
        The project file.
    loaded : LoadedModel or None
        The model loaded by an earlier call; loaded again when None or when the project's
        active model is another one now.
    method : str
        Engine method name.
    cell : int
        Cell id (project row).
    patch : numpy.ndarray
        The cell's stored patch (``Project.image(cell)``).
    target : int or None
        Class to explain; None: the stored prediction, else the model's arg-max.
    seed : int
        LIME's seed (the cache is only used when it was made with the same seed).
    progress : Progress, optional
        Cancellation between steps.

    Returns
    -------
    dict
        ``cell``, ``method``, ``target`` (class explained), ``map`` (H, W) float32,
        ``overlay`` (H, W, 4) uint8, ``source`` ("cached" or "computed"), ``ms`` (compute
        time, None when cached) and ``loaded`` (the :class:`LoadedModel` used); only
        ``cell``, ``method``, ``loaded`` and ``error`` (why) when the method does not apply.

    Raises
    ------
    ProjectError, ValueError
        No model, an unreadable project, a patch the model cannot take.
    """
    from hemalens.engine.explain.methods import explain_cells
    from hemalens.engine.explain.render import overlay_rgba
    from hemalens.engine.explain.store import read_explanations
    from hemalens.engine.jobs import checkpoint
    from hemalens.engine.project.model_index import active_model_info

    info = active_model_info(project_path)
    if loaded is None or info is None or (info["name"], info["created"]) != loaded.key:
        loaded = load_explainer(project_path, progress)
    if method not in loaded.methods:
        return {"cell": int(cell), "method": method, "loaded": loaded,
                "error": loaded.reasons.get(method, "does not apply to this model")}
    checkpoint(progress)
    name, created = loaded.key
    if target is None and loaded.predicted is not None and cell < len(loaded.predicted):
        stored = int(loaded.predicted[cell])
        target = stored if stored >= 0 else None
    maps, targets, computed = read_explanations(
        project_path, name, method, [cell], model_created=created, settings={"seed": seed})
    if computed[0] and (target is None or int(targets[0]) == target):
        result_map, explained, source, ms = maps[0], int(targets[0]), "cached", None
    else:
        checkpoint(progress)
        res = explain_cells(loaded.model, np.asarray(patch)[None], method,
                            targets=None if target is None else np.array([target]), seed=seed)
        result_map, explained = res.maps[0], int(res.targets[0])
        source, ms = "computed", 1000.0 * res.seconds
    return {"cell": int(cell), "method": method, "target": explained,
            "map": np.asarray(result_map, np.float32),
            "overlay": overlay_rgba(patch, result_map), "source": source, "ms": ms,
            "loaded": loaded}


def explain_all(project_path: str | Path, method: str, model_name: str, *,
                seed: int = SEED, progress: Any = None, cluster: Any = None) -> dict[str, Any]:
    """``explain_project(path, method, cells="all")``, imported here to keep torch lazy.

    Parameters
    ----------
    project_path : str or Path
        The project file.
    method : str
        Engine method name.
    model_name : str
        The model whose maps are stored.
    seed : int
        LIME's seed.
    progress : Progress, optional
        Progress over cells; cancelling keeps the chunks already saved.
    cluster : Cluster, optional
        The configured Dask scheduler (:func:`hemalens.gui.workers.configured_cluster`).

    Returns
    -------
    dict
        The summary of :func:`hemalens.engine.workflows.explain.explain_project`.
    """
    from hemalens.engine.workflows.explain import explain_project

    return explain_project(project_path, method, cells="all", model_name=model_name,
                           seed=seed, progress=progress, cluster=cluster)


# -- the view ----------------------------------------------------------------------------


@dataclass
class _Request:
    id: int
    key: tuple[Hashable, ...]
    cell: int
    method: str
    target: int | None
    patch: np.ndarray
    generation: int


class ExplanationView(QWidget):
    """Method and class choice, the overlay of the shown cell, a legend and a status line.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project: Any = None
        self._info: dict[str, Any] | None = None
        self._loaded: LoadedModel | None = None
        self._generation = 0  # bumped per project: results of an older one are dropped
        self._next_id = 0
        self._latest: _Request | None = None  # what the view should show
        self._running: tuple[Job, _Request] | None = None
        self._pending: _Request | None = None
        self._deferred: _Request | None = None  # waits for the window's first paint
        self._lru: OrderedDict[tuple[Hashable, ...], dict[str, Any]] = OrderedDict()
        self.shown_key: tuple[Hashable, ...] | None = None
        self.cell = -1  # the cell the inspector shows
        self.all_job: Job | None = None
        self.jobs_started = 0

        self.heading = QLabel("<b>Explanation</b>", self)
        self.method_combo = QComboBox(self)
        for method, label in METHOD_LABELS.items():
            self.method_combo.addItem(label, method)
        self.class_combo = QComboBox(self)
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.method_combo.setToolTip("Explanation method")
        self.class_combo.setToolTip("Class the map explains")

        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.graphics.setMinimumSize(120, 120)
        self.box = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.image_item = pg.ImageItem()
        self.box.addItem(self.image_item)
        self.legend = QLabel(LEGEND, self)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.explain_all_button = QPushButton("Explain all cells…", self)
        self.explain_all_button.setToolTip(
            "Compute this method's map for every QC-passed cell and store them in the project")

        # Image on the left (square, like the patch), controls and text on the right.
        controls = QGridLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("Method", self), 0, 0)
        controls.addWidget(self.method_combo, 0, 1)
        controls.addWidget(QLabel("Class", self), 1, 0)
        controls.addWidget(self.class_combo, 1, 1)
        controls.setColumnStretch(1, 1)
        side = QVBoxLayout()
        side.addWidget(self.heading)
        side.addLayout(controls)
        side.addWidget(self.legend)
        side.addWidget(self.status)
        side.addStretch(1)
        side.addWidget(self.explain_all_button)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(side, 1)

        self.method_combo.currentIndexChanged.connect(self._choice_changed)
        self.class_combo.currentIndexChanged.connect(self._choice_changed)
        self.explain_all_button.clicked.connect(self.explain_all_cells)
        self.set_project(None)

    # -- state ---------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """Engine name of the chosen method."""
        return str(self.method_combo.currentData())

    @property
    def busy(self) -> bool:
        """Whether a per-cell job runs or waits."""
        return (self._running is not None or self._pending is not None
                or self._deferred is not None)

    @property
    def model_info(self) -> dict[str, Any] | None:
        """``{"name", "created", "class_names"}`` of the active model, None without one."""
        return self._info

    def set_project(self, project: Any) -> None:
        """Use ``project`` (None: none); reads which model it has, loads nothing yet."""
        self._generation += 1
        if self._running is not None:
            self._running[0].cancel()  # its result is dropped either way
        self._pending = None
        self._deferred = None
        self._latest = None
        self.cell = -1
        self._lru.clear()
        self._project = project
        self._loaded = None
        self._info = None
        path = getattr(project, "path", None)
        if path is not None:
            try:
                from hemalens.engine.project.model_index import active_model_info

                self._info = active_model_info(path)
            except Exception as exc:  # optional section: never block opening a project
                log.warning("cannot read the models of %s: %s", path, exc)
                self._set_model_info(None, f"cannot read the models: {one_line_message(exc)}")
                return
        self._set_model_info(self._info, "" if project is None else NO_MODEL)

    def reload_model(self) -> None:
        """Read the active model again (after training or switching models) and re-show."""
        if self._project is None:
            return
        cell = self.cell
        self.set_project(self._project)
        if cell >= 0:
            self.show_cell(cell)

    def _set_model_info(self, info: dict[str, Any] | None, empty_text: str) -> None:
        previous = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("predicted", PREDICTED)
        for k, name in enumerate((info or {}).get("class_names", [])):
            self.class_combo.addItem(name, k)
        index = self.class_combo.findData(previous)
        self.class_combo.setCurrentIndex(max(index, 0))
        self.class_combo.blockSignals(False)
        for i in range(self.method_combo.count()):
            self._set_method_enabled(i, None)
        has_model = info is not None
        for w in (self.method_combo, self.class_combo, self.explain_all_button):
            w.setEnabled(has_model)
        self.image_item.clear()
        self.shown_key = None
        self.status.setText("" if has_model else empty_text)

    def _set_method_enabled(self, index: int, reason: str | None) -> None:
        model = self.method_combo.model()
        assert isinstance(model, QStandardItemModel)  # QComboBox's own model
        item = model.item(index)
        item.setEnabled(reason is None)
        item.setToolTip(f"Not available for this model. {reason}" if reason else "")

    def _apply_loaded(self, loaded: LoadedModel) -> None:
        """Keep the loaded model; disable the methods that do not apply, saying why."""
        if self._loaded is not None and self._loaded.key == loaded.key:
            return
        self._loaded = loaded
        if self._info is None or (self._info["name"], self._info["created"]) != loaded.key:
            self._info = dict(loaded.info)  # the active model changed on disk
            self._set_model_info(self._info, NO_MODEL)
        for i in range(self.method_combo.count()):
            self._set_method_enabled(i, loaded.reasons.get(str(self.method_combo.itemData(i))))
        if self.method not in loaded.methods:
            self.method_combo.setCurrentIndex(self.method_combo.findData(loaded.methods[0]))

    # -- requests ------------------------------------------------------------------------
    def clear_cell(self) -> None:
        """Show no cell (results still arriving are kept in the LRU only)."""
        self.cell = -1
        self._latest = None
        self._pending = None
        self.image_item.clear()
        self.shown_key = None
        if self._info is not None:
            self.status.setText("")

    def show_cell(self, cell: int) -> None:
        """Show the explanation of project row ``cell`` (at once when known, else soon)."""
        project, info = self._project, self._info
        if project is None or cell < 0 or cell >= project.n_cells:
            self.clear_cell()
            return
        self.cell = int(cell)
        if info is None:
            return  # the status line says why there is nothing to show
        method = self.method
        choice = self.class_combo.currentData()
        target = None if choice in (None, PREDICTED) else int(choice)
        key = (str(project.path), info["name"], info["created"], method,
               PREDICTED if target is None else target, int(cell))
        self._next_id += 1
        if key in self._lru:
            self._lru.move_to_end(key)
            self._latest = None
            self._pending = None
            self._display(key, self._lru[key], recent=True)
            return
        try:
            patch = np.asarray(project.image(cell))
        except Exception as exc:
            self._fail(f"cannot read the patch of cell {cell}: {one_line_message(exc)}")
            return
        request = _Request(self._next_id, key, int(cell), method, target, patch, self._generation)
        self._latest = request
        self.image_item.clear()
        self.shown_key = None
        self.status.setText(f"{METHOD_LABELS[method]}: computing…")
        if self._running is None:
            self._start(request)
        else:
            self._pending = request  # replaces an older pending request

    def _choice_changed(self, _index: int) -> None:
        if self.cell >= 0:
            self.show_cell(self.cell)

    def _start(self, request: _Request) -> None:
        window = self.window()
        after_first_paint = getattr(window, "after_first_paint", None)
        if after_first_paint is not None and window.isVisible() and not window.painted:
            # explain_one imports torch (seconds): the window paints first
            waiting, self._deferred = self._deferred is not None, request
            if not waiting:
                after_first_paint(self._start_deferred)
            return
        path = self._project.path
        job = start_job(
            explain_one, path, self._loaded, request.method, request.cell, request.patch,
            request.target, title=f"Explaining cell {request.cell}", parent=self,
            show_dialog=False, show_errors=False, transient=True,
        )
        self.jobs_started += 1
        self._running = (job, request)
        # A bound slot of this widget: Qt drops the connection if the widget goes first.
        job.ended.connect(self._job_ended)

    def _start_deferred(self) -> None:
        request, self._deferred = self._deferred, None
        if (request is not None and request.generation == self._generation
                and request is self._latest and self._running is None):
            self._start(request)

    def _job_ended(self, state: str) -> None:
        if self._running is None:
            return
        job, request = self._running
        try:  # still "running" here: requests made while handling the result wait
            if request.generation == self._generation:
                if state == "done":
                    self._job_done(request, job.result)
                elif state == "error" and self._latest is request:
                    self._fail(f"{METHOD_LABELS[request.method]}, cell {request.cell}: "
                               f"{one_line_message(job.error)}")
        finally:
            self._running = None
        pending, self._pending = self._pending, None
        if pending is not None and pending.generation == self._generation:
            self._start(pending)

    def _job_done(self, request: _Request, result: dict[str, Any]) -> None:
        loaded: LoadedModel = result["loaded"]
        if "error" in result:  # the method does not apply to this model
            if self._latest is request:
                self._fail(f"{METHOD_LABELS[request.method]}: {result['error']}")
            self._apply_loaded(loaded)  # may switch to an applicable method
            return
        key = request.key
        if loaded.key != key[1:3]:  # computed by the model now active: key it by that one
            key = (key[0], *loaded.key, *key[3:])
        entry = {k: result[k] for k in ("map", "overlay", "target", "source", "ms")}
        self._lru[key] = entry
        self._lru.move_to_end(key)
        while len(self._lru) > LRU_SIZE:
            self._lru.popitem(last=False)
        self._apply_loaded(loaded)  # may switch method: a new request, after the LRU entry
        if self._latest is request:
            self._latest = None
            self._display(key, entry)

    def _display(self, key: tuple[Hashable, ...], entry: dict[str, Any], *,
                 recent: bool = False) -> None:
        self.image_item.setImage(entry["overlay"], autoLevels=False, levels=(0, 255))
        self.box.autoRange(padding=0)
        self.shown_key = key
        method, choice = str(key[3]), key[4]
        names = (self._info or {}).get("class_names", [])
        code = int(entry["target"])
        name = names[code] if 0 <= code < len(names) else f"#{code}"
        what = f"predicted class {name}" if choice == PREDICTED else f"class {name}"
        if entry["source"] == "cached":
            when = "cached"
        else:
            when = f"{entry['ms']:.0f} ms" + (" (recent)" if recent else "")
        self.status.setText(f"{METHOD_LABELS.get(method, method)}, {what}, {when}")

    def _fail(self, message: str) -> None:
        log.warning("explanation: %s", message)
        self._latest = None
        self.image_item.clear()
        self.shown_key = None
        self.status.setText(message)

    # -- all cells -----------------------------------------------------------------------
    def explain_all_cells(self) -> Job | None:
        """Compute and store the chosen method's maps of every QC-passed cell.

        Returns
        -------
        Job or None
            The job (with its progress dialog and Cancel button), None without a model.
        """
        if self._project is None or self._info is None:
            return None
        if self.all_job is not None and self.all_job.is_running:
            return self.all_job
        method = self.method
        label = METHOD_LABELS[method]
        self.all_job = start_job(
            explain_all, self._project.path, method, self._info["name"],
            title=f"{label}: explaining all cells", parent=self, show_dialog=True,
            show_errors=False, cluster=configured_cluster(),
        )
        self.explain_all_button.setEnabled(False)
        self.all_job.ended.connect(self._all_ended)
        self.status.setText(f"{label}: explaining all cells…")
        return self.all_job

    def _all_ended(self, state: str) -> None:
        job, self.all_job = self.all_job, None
        self.explain_all_button.setEnabled(self._info is not None)
        if job is None:
            return
        if state == "done":
            r = job.result
            text = (f"{METHOD_LABELS.get(r['method'], r['method'])}: {r['cells']} cells stored "
                    f"({r['computed']} computed, {r['cached']} cached) in {r['seconds']:.1f} s")
        elif state == "cancelled":
            text = "explaining all cells cancelled (finished chunks are stored)"
        else:
            text = f"explaining all cells failed: {one_line_message(job.error)}"
            log.warning("%s", text)
        self.status.setText(text)
