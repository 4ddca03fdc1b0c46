"""The review session: the one Qt-free object that holds what a reviewer works on.

The gallery, the inspector, the embedding view and the command line all share it
(napari's pattern: a plain model that emits change events; views subscribe and write back
through its commands, one direction each). It holds:

- the current labels and review decisions of every cell (mirrors of the annotation
  store, kept in step with edits made by other programs through :meth:`sync`),
- the active model's predictions in the project's class coding, the review queue and the
  "disputed" flags,
- the reviewer's filter and sort order, and the selection,
- the commands :meth:`relabel`, :meth:`confirm`, :meth:`exclude`, :meth:`mark_unsure`,
  :meth:`undo`, :meth:`redo`, :meth:`sign_off` and :meth:`reopen`. Each is one durable
  transaction of the annotation store: it is on disk when the call returns.

Views register a callback with :meth:`subscribe`; it receives a :class:`SessionEvent` after
every change, whatever caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from hemalens.engine.errors import HemaLensError, ProjectError
from hemalens.engine.project.annotations import DECISIONS, ActionResult, default_user
from hemalens.engine.review.queue import REVIEW_BELOW, REVIEW_THRESHOLD, disputed, review_queue

if TYPE_CHECKING:
    from hemalens.engine.project.store import Project

__all__ = [
    "ORDERS",
    "ReviewError",
    "ReviewFilter",
    "ReviewSession",
    "SessionEvent",
    "sample_names",
]

#: Sort orders of the gallery: least certain first, grouped by predicted class, the review
#: queue's order, or by cell id.
ORDERS = ("confidence", "class", "queue", "id")
UNDECIDED, CONFIRMED, RELABELLED, EXCLUDED, UNSURE = range(len(DECISIONS))
#: Undecided cells below this calibrated confidence are left out of the differential as
#: out of distribution when the model gives no OOD flag (the rule of `hemalens review`).
OOD_CONFIDENCE = 0.5


class ReviewError(HemaLensError):
    """A command the review rules refuse (e.g. editing a signed-off sample); one line."""


@dataclass(frozen=True)
class ReviewFilter:
    """Which cells a view shows. ``None`` means "no restriction" everywhere.

    Attributes
    ----------
    samples : frozenset of str, optional
    given : frozenset of int, optional
        Current label codes (-1: no label).
    predicted : frozenset of int, optional
        Predicted class codes in the project's coding (-1: no prediction).
    confidence : (float, float), optional
        Inclusive range of calibrated confidence.
    decisions : frozenset of int, optional
        Decision codes (index into ``DECISIONS``).
    qc : bool, optional
        True: QC-passed cells only (the default); False: rejected only.
    ood : bool, optional
        Out-of-distribution flag.
    disputed : bool, optional
        The confident prediction disputes the label ("≠").
    queue : bool
        Only cells in the review queue.
    cell_id : int, optional
        Only this cell (search by id).
    """

    samples: frozenset[str] | None = None
    given: frozenset[int] | None = None
    predicted: frozenset[int] | None = None
    confidence: tuple[float, float] | None = None
    decisions: frozenset[int] | None = None
    qc: bool | None = True
    ood: bool | None = None
    disputed: bool | None = None
    queue: bool = False
    cell_id: int | None = None


@dataclass(frozen=True)
class SessionEvent:
    """A change of the session.

    Attributes
    ----------
    kind : str
        ``"cells"`` (labels or decisions of ``ids`` changed), ``"classes"``,
        ``"predictions"``, ``"signoff"``, ``"view"`` (filter or order), ``"selection"``,
        ``"history"`` (undo/redo availability).
    ids : numpy.ndarray, optional
        The cells concerned.
    source : object, optional
        Who asked for the change (views ignore echoes of their own).
    """

    kind: str
    ids: np.ndarray | None = None
    source: Any = None


def sample_names(project: Project) -> np.ndarray:
    """Sample of every cell: its input's ``run``, else its input file name.

    Parameters
    ----------
    project : Project
        An open project.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` str (``""`` for cells without an input).
    """
    runs = [str(r) for r in project.inputs.get("run", [])]
    files = [str(f) for f in project.inputs.get("file", [])]
    table = np.asarray([r or f for r, f in zip(runs, files, strict=True)] + [""], dtype=object)
    ids = np.asarray(project.cells["input_id"], np.int64)
    ids = np.where((ids >= 0) & (ids < len(table) - 1), ids, len(table) - 1)
    return table[ids].astype(str)


@dataclass
class _Predictions:
    model: str
    names: list[str]                 # model class names
    predicted: np.ndarray            # project class codes, -1 = none/unknown class
    predicted_model: np.ndarray      # model class codes, -1 = none
    confidence: np.ndarray
    spread: np.ndarray               # MC std of the predicted class (NaN = none)
    ood: np.ndarray | None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    # Per-cell views computed once per load: the gallery reads them per painted tile.
    cell_names: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    ood_flag: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class ReviewSession:
    """Review state and commands over one project (see the module docstring).

    Parameters
    ----------
    project : Project
        Opened with ``mode="r+"`` (a read-only project gives a read-only session).
    user : str, optional
        Recorded on every edit; default the operating-system user.
    threshold : float
        Confidence of a disputing prediction that queues a cell.
    uncertain_below : float
        Cells below this confidence are queued as uncertain.
    """

    def __init__(
        self,
        project: Project,
        *,
        user: str | None = None,
        threshold: float = REVIEW_THRESHOLD,
        uncertain_below: float = REVIEW_BELOW,
    ) -> None:
        if project.annotations is None:
            raise ProjectError(project.path, "project is closed")
        self.project = project
        self.store = project.annotations
        self.user = (user or default_user()).strip() or "unknown"
        self.threshold = float(threshold)
        self.uncertain_below = float(uncertain_below)
        self.n_cells = project.n_cells
        self.labels: np.ndarray = project.cells["given_label"]
        self.original = np.asarray(project.cells["original_label"], np.int16)
        self.decisions: np.ndarray = self.store.current_decisions()
        self.classes: list[str] = list(project.classes)
        self.qc = np.asarray(project.cells["qc_pass"], bool)
        self.samples = sample_names(project)
        self.sample_list: list[str] = sorted(set(self.samples[self.qc].tolist()) - {""})
        self.signed: dict[str, dict[str, Any]] = self.store.signed_samples()
        self._last_change = self.store.last_change()
        self._predictions: _Predictions | None = None
        self.prediction_error: str | None = None
        self.queue = np.zeros(0, np.int64)
        self.in_queue = np.zeros(self.n_cells, bool)
        self.filter = ReviewFilter()
        self.order = "confidence"
        self.selection = np.zeros(0, np.int64)
        self.current: int | None = None
        self._listeners: list[Callable[[SessionEvent], None]] = []
        self._order_cache: dict[str, np.ndarray] = {}
        self._visible: np.ndarray | None = None
        self.load_predictions()

    @classmethod
    def open(cls, path: str | PathLike[str], *, user: str | None = None,
             **kwargs: Any) -> ReviewSession:
        """Open a project for review (closing it is :meth:`close`'s job).

        Parameters
        ----------
        path : str or PathLike
            The project.
        user : str, optional
            The reviewer.
        **kwargs
            ``threshold``, ``uncertain_below``.

        Returns
        -------
        ReviewSession
        """
        from hemalens.engine.project.store import Project  # h5py: not at GUI start-up

        project = Project.open(path, "r+")
        try:
            return cls(project, user=user, **kwargs)
        except BaseException:
            project.close()
            raise

    def close(self) -> None:
        """Close the project."""
        self._listeners.clear()
        self.project.close()

    def __enter__(self) -> ReviewSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- notifications ------------------------------------------------------------------
    def subscribe(self, callback: Callable[[SessionEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns the unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _emit(self, kind: str, ids: np.ndarray | None = None, source: Any = None) -> None:
        event = SessionEvent(kind, ids, source)
        for callback in list(self._listeners):
            callback(event)

    # -- predictions --------------------------------------------------------------------
    def load_predictions(self, model_name: str | None = None) -> None:
        """(Re)read the stored predictions of the active (or the named) model.

        Damaged predictions do not stop the review: the session goes on without
        them and :attr:`prediction_error` carries the one-line reason.
        """
        from hemalens.engine.review.predictions import read_predictions

        self.prediction_error = None
        try:
            found = read_predictions(self.project, model_name)
        except ProjectError as exc:
            found, self.prediction_error = None, str(exc)
        self._predictions = None if found is None else self._map_predictions(*found)
        self._update_queue()
        self._order_cache.clear()
        self._visible = None
        self._emit("predictions")

    def _map_predictions(self, columns: dict[str, np.ndarray],
                         attrs: dict[str, Any]) -> _Predictions:
        names = [str(c) for c in attrs.get("class_names") or self.classes]
        pm = np.asarray(columns["predicted"], np.int64)
        pm = np.where((pm >= 0) & (pm < len(names)), pm, -1)
        to_project = np.asarray([self.classes.index(c) if c in self.classes else -1
                                 for c in names] + [-1], np.int64)
        conf = np.asarray(columns.get("confidence", np.full(self.n_cells, np.nan)), np.float64)
        std = columns.get("mc_std")
        spread = np.full(self.n_cells, np.nan)
        if std is not None and std.ndim == 2 and std.shape[1] == len(names):
            ok = pm >= 0
            spread[ok] = std[np.flatnonzero(ok), pm[ok]]
        ood = None if columns.get("ood") is None else np.asarray(columns["ood"], bool)
        if ood is not None:
            flag = ood & self.qc
        else:  # the rule `hemalens review` applies without a detector
            flag = self.qc & (pm >= 0) & (np.nan_to_num(conf, nan=0.0) < OOD_CONFIDENCE)
        return _Predictions(
            model=str(attrs.get("model", "")), names=names, predicted=to_project[pm],
            predicted_model=pm, confidence=conf, spread=spread, ood=ood, columns=columns,
            attrs=attrs, cell_names=np.asarray([*names, ""], dtype=object)[pm], ood_flag=flag,
        )

    @property
    def has_predictions(self) -> bool:
        """Whether the project holds predictions to review."""
        return self._predictions is not None

    @property
    def model(self) -> str | None:
        """The model whose predictions are shown."""
        return None if self._predictions is None else self._predictions.model

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class of every cell in the project's coding (-1 = none)."""
        if self._predictions is None:
            return np.full(self.n_cells, -1, np.int64)
        return self._predictions.predicted

    @property
    def predicted_names(self) -> np.ndarray:
        """Predicted class name of every cell (``""`` = none)."""
        if self._predictions is None:
            return np.full(self.n_cells, "", dtype=object)
        return self._predictions.cell_names

    @property
    def confidence(self) -> np.ndarray:
        """Calibrated confidence of every cell's prediction (NaN = none)."""
        if self._predictions is None:
            return np.full(self.n_cells, np.nan)
        return self._predictions.confidence

    @property
    def spread(self) -> np.ndarray:
        """MC-dropout standard deviation of the predicted class (NaN = none)."""
        if self._predictions is None:
            return np.full(self.n_cells, np.nan)
        return self._predictions.spread

    @property
    def ood(self) -> np.ndarray:
        """Out-of-distribution flag of every cell.

        The model's ``ood`` column when predictions carry one, else cells below
        :data:`OOD_CONFIDENCE` (the rule ``hemalens review`` applies).
        """
        p = self._predictions
        return np.zeros(self.n_cells, bool) if p is None else p.ood_flag

    def prediction_columns(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Return the stored prediction columns and attributes (None without predictions)."""
        p = self._predictions
        return None if p is None else (p.columns, p.attrs)

    @property
    def disputed(self) -> np.ndarray:
        """Cells whose confident prediction disputes the current label ("≠")."""
        return disputed(self.predicted, self.confidence, self.labels, threshold=self.threshold)

    def is_disputed(self, cell: int) -> bool:
        """Whether one cell is disputed (:attr:`disputed` for one cell, in O(1))."""
        i = slice(cell, cell + 1)
        return bool(disputed(self.predicted[i], self.confidence[i], self.labels[i],
                             threshold=self.threshold)[0])

    def _update_queue(self) -> None:
        p = self._predictions
        if p is None:
            self.queue = np.zeros(0, np.int64)
        else:
            self.queue = review_queue(
                p.predicted, p.confidence, self.original, self.qc, ood=p.ood,
                threshold=self.threshold, uncertain_below=self.uncertain_below,
            )
        self.in_queue = np.zeros(self.n_cells, bool)
        self.in_queue[self.queue] = True

    def queue_progress(self, sample: str | None = None) -> tuple[int, int]:
        """``(decided, total)`` cells of the review queue (of one sample)."""
        q = self.queue
        if sample is not None:
            q = q[self.samples[q] == sample]
        return int(np.count_nonzero(self.decisions[q] != UNDECIDED)), int(q.size)

    # -- what the views show --------------------------------------------------------------
    def set_filter(self, flt: ReviewFilter | None = None, *, source: Any = None,
                   **changes: Any) -> None:
        """Replace the filter (or change some of its fields) and notify the views."""
        new = flt if flt is not None else replace(self.filter, **changes)
        if new != self.filter:
            self.filter = new
            self._visible = None
            self._emit("view", source=source)

    def set_order(self, order: str, *, source: Any = None) -> None:
        """Choose the sort order (one of :data:`ORDERS`)."""
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; one of {ORDERS}")
        if order != self.order:
            self.order = order
            self._visible = None
            self._emit("view", source=source)

    def _sorted(self) -> np.ndarray:
        """All cells in the current order (cached per order and predictions)."""
        key = self.order
        cached = self._order_cache.get(key)
        if cached is not None:
            return cached
        rejected = (~self.qc).astype(np.int8)
        conf = np.nan_to_num(self.confidence, nan=2.0)
        ids = np.arange(self.n_cells)
        if key == "confidence":
            order = np.lexsort((ids, conf, rejected))
        elif key == "class":
            pred = np.where(self.predicted >= 0, self.predicted, 1 << 30)
            order = np.lexsort((ids, conf, pred, rejected))
        elif key == "queue":
            order = self.queue
        else:
            order = ids
        order = np.asarray(order, np.int64)
        self._order_cache[key] = order
        return order

    def mask(self, flt: ReviewFilter | None = None) -> np.ndarray:
        """Boolean mask of the cells that pass a filter (default the session's)."""
        f = self.filter if flt is None else flt
        m = np.ones(self.n_cells, bool)
        if f.cell_id is not None:
            m[:] = False
            if 0 <= f.cell_id < self.n_cells:
                m[f.cell_id] = True
            return m
        if f.qc is not None:
            m &= self.qc if f.qc else ~self.qc
        if f.samples is not None:
            m &= np.isin(self.samples, list(f.samples))
        if f.given is not None:
            m &= np.isin(self.labels, list(f.given))
        if f.predicted is not None:
            m &= np.isin(self.predicted, list(f.predicted))
        if f.confidence is not None:
            lo, hi = f.confidence
            c = self.confidence
            m &= (c >= lo) & (c <= hi)
        if f.decisions is not None:
            m &= np.isin(self.decisions, list(f.decisions))
        if f.ood is not None:
            m &= self.ood == f.ood
        if f.disputed is not None:
            m &= self.disputed == f.disputed
        if f.queue:
            m &= self.in_queue
        return m

    def visible(self) -> np.ndarray:
        """Return the cells the views show, in order (the filter applied to the order)."""
        if self._visible is None:
            cid = self.filter.cell_id
            if cid is not None:  # a search finds the cell whatever the order
                ok = 0 <= cid < self.n_cells
                self._visible = np.asarray([cid] if ok else [], np.int64)
            else:
                order = self._sorted()
                self._visible = order[self.mask()[order]]
        return self._visible

    def group_counts(self) -> list[tuple[int, int]]:
        """``(predicted class code, cells)`` of the visible cells in display order."""
        vis = self.visible()
        if vis.size == 0:
            return []
        pred = self.predicted[vis]
        change = np.flatnonzero(np.diff(pred)) + 1
        starts = np.r_[0, change]
        stops = np.r_[change, vis.size]
        return [(int(pred[a]), int(b - a)) for a, b in zip(starts, stops, strict=True)]

    # -- selection ------------------------------------------------------------------------
    def select(self, ids: Iterable[int] | np.ndarray, *, current: int | None = None,
               source: Any = None) -> None:
        """Set the selection (and the current cell, default the first selected)."""
        sel = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                                   np.int64).reshape(-1))
        sel = sel[(sel >= 0) & (sel < self.n_cells)]
        cur = current if current is not None else (int(sel[0]) if sel.size else None)
        if np.array_equal(sel, self.selection) and cur == self.current:
            return
        self.selection, self.current = sel, cur
        self._emit("selection", sel, source)

    # -- commands ------------------------------------------------------------------------
    def _check_editable(self, ids: np.ndarray) -> np.ndarray:
        if self.store.read_only:
            raise ReviewError(f"{self.project.path}: project is read-only; edits cannot be "
                              "saved")
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        bad = ids[(ids < 0) | (ids >= self.n_cells)]
        if bad.size:
            raise ValueError(f"unknown cell ids {bad[:5].tolist()} (project has "
                             f"{self.n_cells} cells)")
        self.sync()
        locked = sorted({str(s) for s in self.samples[ids]} & set(self.signed))
        if locked:
            rec = self.signed[locked[0]]
            raise ReviewError(f"sample {locked[0]!r} was signed off by {rec['user']} at "
                              f"{rec['time']}; reopen it before editing its cells")
        return ids

    def _done(self, result: ActionResult, source: Any) -> ActionResult:
        self.sync(source=source, force=True)
        self._emit("history", source=source)
        return result

    def relabel(self, ids: Any, label: str | int | None, *, reason: str = "",
                source: Any = None) -> ActionResult:
        """Give cells a class (a name, a class code, or None to remove the label).

        Cells whose label changes are marked ``relabelled``; cells that already had it
        ``confirmed``.
        """
        ids = self._check_editable(ids)
        kwargs: dict[str, Any]
        if label is None:
            kwargs = {"labels": -1}
        elif isinstance(label, (int, np.integer)):
            if not 0 <= int(label) < len(self.classes):
                raise ValueError(f"class code {label} outside 0..{len(self.classes) - 1}")
            kwargs = {"labels": int(label)}
        else:
            kwargs = {"label_name": str(label)}
        result = self.store.apply("relabel", ids, user=self.user, decision="relabelled",
                                  reason=reason, **kwargs)
        return self._done(result, source)

    def confirm(self, ids: Any, *, reason: str = "", source: Any = None) -> ActionResult:
        """Confirm cells: their label stands; an unlabelled cell takes its predicted class.

        Raises
        ------
        ReviewError
            A cell has neither a label nor a prediction to confirm.
        """
        ids = self._check_editable(ids)
        labels = self.labels[ids].astype(np.int64)
        need = labels < 0
        if need.any():
            names = self.predicted_names[ids[need]]
            if np.any(names == ""):
                bad = ids[need][names == ""][:5].tolist()
                raise ReviewError(f"cells {bad} have no label and no prediction to confirm; "
                                  "give them a class instead")
            codes = self._class_codes(names.tolist())
            labels[need] = codes
        result = self.store.apply("confirm", ids, user=self.user, labels=labels,
                                  decision="confirmed", reason=reason)
        return self._done(result, source)

    def _class_codes(self, names: list[str]) -> np.ndarray:
        """Codes of class names, adding the ones the project lacks (one edit each)."""
        for name in dict.fromkeys(names):
            self.store.ensure_class(name)
        self.sync(force=True)
        return np.asarray([self.classes.index(n) for n in names], np.int64)

    def exclude(self, ids: Any, *, reason: str = "", source: Any = None) -> ActionResult:
        """Mark cells "not classed": left out of the differential."""
        ids = self._check_editable(ids)
        result = self.store.apply("exclude", ids, user=self.user, decision="excluded",
                                  reason=reason)
        return self._done(result, source)

    def mark_unsure(self, ids: Any, *, reason: str = "", source: Any = None) -> ActionResult:
        """Mark cells unsure (a second opinion is needed; blocks the sign-off)."""
        ids = self._check_editable(ids)
        result = self.store.apply("unsure", ids, user=self.user, decision="unsure",
                                  reason=reason)
        return self._done(result, source)

    def undo(self, *, expect: int | None = None, source: Any = None) -> ActionResult:
        """Undo this user's newest edit (a new history row; nothing is deleted).

        Parameters
        ----------
        expect : int, optional
            The action the caller believes is on top of the undo stack (a GUI undo stack
            passes its command's action); refused when another program changed it.
        """
        self._check_stack("undo", expect)
        target = self._stack_top("undo")
        if target is not None:
            self._check_editable(self._action_cells(target))
        return self._done(self.store.undo(self.user), source)

    def redo(self, *, expect: int | None = None, source: Any = None) -> ActionResult:
        """Redo this user's most recently undone edit."""
        self._check_stack("redo", expect)
        target = self._stack_top("redo")
        if target is not None:
            self._check_editable(self._action_cells(target))
        return self._done(self.store.redo(self.user), source)

    def _stack_top(self, which: str) -> int | None:
        stack = self.store.undo_stack(self.user) if which == "undo" else \
            self.store.redo_stack(self.user)
        return stack[-1] if stack else None

    def _check_stack(self, which: str, expect: int | None) -> None:
        if expect is not None and self._stack_top(which) != expect:
            raise ReviewError(f"{self.project.path}: the {which} history changed in another "
                              "program; nothing was done")

    def _action_cells(self, action: int) -> np.ndarray:
        rows = self.store._read("SELECT DISTINCT cell_id FROM changes WHERE action = ?",
                                (int(action),))
        return np.asarray([r[0] for r in rows], np.int64)

    def can_undo(self) -> bool:
        """Whether this user has an edit to undo."""
        return self._stack_top("undo") is not None

    def can_redo(self) -> bool:
        """Whether this user has an undone edit to redo."""
        return self._stack_top("redo") is not None

    # -- following other writers ------------------------------------------------------------
    def sync(self, *, source: Any = None, force: bool = False) -> np.ndarray:
        """Apply edits made since the last sync (by this session or another program).

        Returns
        -------
        numpy.ndarray
            The cells that changed.
        """
        rows = self.store.changes_since(self._last_change)
        changed = np.zeros(0, np.int64)
        if rows["id"].size:
            self._last_change = int(rows["id"][-1])
            lab = rows["field"] == 0
            self.labels[rows["cell_id"][lab]] = rows["new"][lab]
            dec = ~lab
            self.decisions[rows["cell_id"][dec]] = rows["new"][dec]
            changed = np.unique(rows["cell_id"])
        classes = self.store.classes()
        if classes != self.classes:
            self.classes[:] = classes
            self.project.classes = list(classes)
            if self._predictions is not None:  # new classes may match predicted names
                cols, attrs = self._predictions.columns, self._predictions.attrs
                self._predictions = self._map_predictions(cols, attrs)
            self._emit("classes", source=source)
        signed = self.store.signed_samples()
        if signed != self.signed:
            self.signed = signed
            self._emit("signoff", source=source)
        if changed.size:
            # The shown cells stay as they are (a decided cell does not jump away under a
            # "undecided" filter); refresh_view() applies the filter to the new labels.
            self._emit("cells", changed, source)
        return changed

    def refresh_view(self, *, source: Any = None) -> None:
        """Apply the filter and order again to the labels and decisions as they are now."""
        self._visible = None
        self._emit("view", source=source)

    # -- differential and sign-off --------------------------------------------------------
    def reviewed_class(self) -> np.ndarray:
        """Class each cell counts as: its label, else its predicted class (-1 = none)."""
        return np.where(self.labels >= 0, self.labels, self.predicted).astype(np.int64)

    def differential(self, samples: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Differential count per sample with Wilson 95 % intervals, as reviewed now.

        Cells count under their label (or their predicted class while unlabelled).
        Left out, each with its reason: QC rejects (``qc``), cells the reviewer excluded
        (``excluded``), undecided out-of-distribution cells (``ood``) and cells with no
        class at all (``unclassified``). ``_changed`` counts the cells the reviewer
        relabelled.

        Returns
        -------
        dict
            As :func:`~hemalens.engine.review.differential.differential_counts`, plus
            ``_changed`` and ``_decided`` per sample.
        """
        from hemalens.engine.review.differential import differential_counts

        cls = self.reviewed_class()
        excluded = self.qc & (self.decisions == EXCLUDED)
        ood = self.qc & ~excluded & (self.decisions == UNDECIDED) & self.ood
        unclassified = self.qc & ~excluded & ~ood & (cls < 0)
        include = self.qc & ~excluded & ~ood & (cls >= 0)
        keep = np.ones(self.n_cells, bool) if samples is None else np.isin(
            self.samples, list(samples))
        keep &= self.samples != ""
        out = differential_counts(
            np.where(include, cls, -1)[keep], self.samples[keep], self.classes,
            include=include[keep], flagged=(self.in_queue & (self.decisions == UNDECIDED))[keep],
            excluded_reasons={"qc": (~self.qc)[keep], "excluded": excluded[keep],
                              "ood": ood[keep], "unclassified": unclassified[keep]},
        )
        for s, row in out.items():
            in_s = keep & (self.samples == s)
            row["_changed"] = int(np.count_nonzero(in_s & (self.decisions == RELABELLED)))
            row["_decided"] = int(np.count_nonzero(in_s & self.qc &
                                                   (self.decisions != UNDECIDED)))
        return out

    def signoff_blockers(self, sample: str) -> list[str]:
        """Why ``sample`` cannot be signed off now (empty when it can).

        The rules: every queued cell of the sample is decided, no cell is marked unsure,
        and every QC-passed cell that is not excluded has a label (confirm or relabel it).
        """
        self.sync()
        if sample not in self.sample_list:
            return [f"no sample {sample!r} (samples: {', '.join(self.sample_list) or 'none'})"]
        in_s = (self.samples == sample) & self.qc
        reasons = []
        q = self.queue[self.samples[self.queue] == sample]
        undecided = q[self.decisions[q] == UNDECIDED]
        if undecided.size:
            reasons.append(f"{undecided.size} of {q.size} cells in the review queue are "
                           f"undecided (e.g. cell {int(undecided[0])})")
        unsure = np.flatnonzero(in_s & (self.decisions == UNSURE))
        if unsure.size:
            reasons.append(f"{unsure.size} cells are marked unsure (e.g. cell {int(unsure[0])})")
        unlabelled = np.flatnonzero(in_s & (self.decisions != EXCLUDED) & (self.labels < 0))
        if unlabelled.size:
            reasons.append(f"{unlabelled.size} cells have no label; confirm or relabel them "
                           f"(e.g. cell {int(unlabelled[0])})")
        return reasons

    def sign_off(self, sample: str, *, reason: str = "", source: Any = None) -> dict[str, Any]:
        """Sign a sample off: its counts are recorded and its cells locked against edits.

        Returns
        -------
        dict
            The recorded counts.

        Raises
        ------
        ReviewError
            The sample is already signed off or a rule refuses it (the reasons in one line).
        """
        if self.store.read_only:
            raise ReviewError(f"{self.project.path}: project is read-only; cannot sign off")
        blockers = self.signoff_blockers(sample)
        if blockers:
            raise ReviewError(f"cannot sign off {sample!r}: " + "; ".join(blockers))
        if sample in self.signed:
            rec = self.signed[sample]
            raise ReviewError(f"sample {sample!r} is already signed off by {rec['user']} at "
                              f"{rec['time']}")
        diff = self.differential([sample]).get(sample, {})
        counts = {
            "model": self.model,
            "cells": int(np.count_nonzero((self.samples == sample) & self.qc)),
            "counted": diff.get("_total", 0),
            "classes": {c: diff[c]["n"] for c in self.classes if c in diff},
            "percent": {c: diff[c]["percent"] for c in self.classes if c in diff},
            "excluded": diff.get("_excluded", {}),
            "relabelled": diff.get("_changed", 0),
        }
        self.store.record_signoff(sample, user=self.user, counts=counts, reason=reason)
        self.sync(source=source)
        return counts

    def reopen(self, sample: str, *, reason: str, source: Any = None) -> None:
        """Reopen a signed-off sample for edits (the reason is recorded)."""
        if not str(reason).strip():
            raise ReviewError("reopening a signed-off sample needs a reason")
        if sample not in self.signed:
            raise ReviewError(f"sample {sample!r} is not signed off")
        self.store.record_signoff(sample, user=self.user, kind="reopen", reason=reason)
        self.sync(source=source)
