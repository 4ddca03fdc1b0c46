"""The Qt side of the review session.

Its change events as Qt signals, and following edits and results that other programs
write to the project.

:class:`~hemalens.engine.review.session.ReviewSession` is Qt-free and calls plain callbacks;
:class:`SessionBridge` turns them into signals for the views (one direction each: views
listen to the bridge and write back through the session's commands). A timer polls the
project a few times a second for changes made elsewhere: new history rows in the
annotation store (a `hemalens label` in a terminal) and new files in ``derived/`` (a
`hemalens train` or `predict`). A poll costs two cheap stat calls and, when the store
changed, one indexed query.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

#: How often the project is checked for changes made by other programs, ms.
POLL_MS = 700


def _derived_stamp(root: Path) -> tuple:
    """Return a cheap fingerprint of the derived files (names, sizes and mtimes)."""
    out = []
    derived = root / "derived"
    for kind in ("models", "predictions", "embeddings", "maps"):
        folder = derived / kind
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.name.endswith(".h5") and not e.name.startswith("."):
                        st = e.stat()
                        out.append((kind, e.name, st.st_size, st.st_mtime_ns))
        except OSError:
            pass
    return tuple(sorted(out))


class SessionBridge(QObject):
    """Signals of one :class:`ReviewSession`, and the poll for outside changes.

    Parameters
    ----------
    session : ReviewSession
        The open session (the bridge does not own it).
    parent : QObject, optional
        Qt parent.
    """

    cellsChanged = Signal(object)  # numpy array of cell ids
    classesChanged = Signal()
    predictionsChanged = Signal()
    signoffChanged = Signal()
    viewChanged = Signal(object)  # source of the change
    selectionChanged = Signal(object, object)  # ids, source
    historyChanged = Signal()
    derivedChanged = Signal()  # models, predictions or maps written by another program

    def __init__(self, session: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._unsubscribe = session.subscribe(self._on_event)
        self._derived = _derived_stamp(Path(session.project.path))
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.timer.start()

    def _on_event(self, event: Any) -> None:
        kind = event.kind
        if kind == "cells":
            self.cellsChanged.emit(event.ids if event.ids is not None else np.zeros(0, int))
        elif kind == "classes":
            self.classesChanged.emit()
        elif kind == "predictions":
            self.predictionsChanged.emit()
        elif kind == "signoff":
            self.signoffChanged.emit()
        elif kind == "view":
            self.viewChanged.emit(event.source)
        elif kind == "selection":
            self.selectionChanged.emit(event.ids, event.source)
        elif kind == "history":
            self.historyChanged.emit()

    def poll(self) -> None:
        """Pick up edits and derived files written by other programs since the last poll."""
        try:
            changed = self.session.sync(source="outside")
            if changed.size:
                self.historyChanged.emit()
            stamp = _derived_stamp(Path(self.session.project.path))
            if stamp != self._derived:
                self._derived = stamp
                self.session.load_predictions()
                self.derivedChanged.emit()
        except Exception as exc:  # a transient read error must not stop the poll
            log.warning("following changes of %s failed: %s", self.session.project.path, exc)

    def note_derived_written(self) -> None:
        """Accept the current derived files as seen (after this program wrote them)."""
        self._derived = _derived_stamp(Path(self.session.project.path))

    def close(self) -> None:
        """Stop listening (the session itself is closed by its owner)."""
        self.timer.stop()
        self._unsubscribe()
