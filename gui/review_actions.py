"""The reviewer's keys.

One QAction per command, shown in the Review menu, the context menu and the help overlay.

``1``-``9`` give the cells a class (in the order of the project's classes) and move on,
``Space``/``Enter`` confirm the label (an unlabelled cell takes its predicted class) and
move on, ``X`` excludes ("not classed"), ``U`` marks unsure, ``Ctrl+Z``/``Ctrl+Shift+Z``
undo and redo. The keys act on the selection when it holds the current cell, else on
the current cell. Every command goes through the review session (one durable
transaction) and then onto the window's undo stack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import QMenu, QWidget

from hemalens.engine.errors import HemaLensError
from hemalens.gui.undo import push_edit

log = logging.getLogger(__name__)

#: Key, command and words for the help overlay (the class keys are added per project).
FIXED_KEYS = (
    ("Space / Enter", "confirm", "Confirm the label (or the prediction of an unlabelled cell)"),
    ("X", "exclude", "Not classed: leave out of the differential"),
    ("U", "unsure", "Mark unsure (needs a second look; blocks sign-off)"),
    ("Ctrl+Z", "undo", "Undo your last edit"),
    ("Ctrl+Shift+Z", "redo", "Redo"),
    ("Arrows, PgUp/PgDn, Home/End", "", "Move; with Shift: extend the selection"),
    ("Ctrl+A", "", "Select every shown cell"),
    ("F5", "", "Apply the filter again"),
    ("?", "help", "Show or hide this help"),
)


class ReviewActions(QObject):
    """The review QActions of a window.

    Parameters
    ----------
    parent : QWidget
        The window (the actions live on it; their shortcuts are window-wide, but a text
        field that has the focus keeps its typing).
    undo_stack : QUndoStack
        The window's undo stack.
    targets : callable
        ``() -> (cells, advance)``: the cells the active view acts on, and a function
        that moves that view past them.
    report : callable
        Called with a one-line message (status bar) after every command.
    """

    def __init__(self, parent: QWidget, undo_stack: QUndoStack,
                 targets: Callable[[], tuple[np.ndarray, Callable[[np.ndarray], None]]],
                 report: Callable[[str], None]) -> None:
        super().__init__(parent)
        self.window = parent
        self.stack = undo_stack
        self.targets = targets
        self.report = report
        self.session: Any = None
        self.class_actions: list[QAction] = []

        def act(text: str, keys: list[str], slot: Callable[[], None], tip: str) -> QAction:
            a = QAction(text, parent)
            a.setShortcuts([QKeySequence(k) for k in keys])
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setToolTip(f"{tip} ({keys[0]})")
            a.setStatusTip(tip)
            a.triggered.connect(slot)
            parent.addAction(a)
            return a

        self.confirm = act("&Confirm", ["Space", "Return", "Enter"], self.do_confirm,
                           "Confirm the label and move on")
        self.exclude = act("E&xclude (not classed)", ["X"], self.do_exclude,
                           "Leave the cells out of the differential")
        self.unsure = act("Mark &unsure", ["U"], self.do_unsure,
                          "Mark the cells unsure")
        self.undo = undo_stack.createUndoAction(parent, "&Undo")
        self.undo.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo = undo_stack.createRedoAction(parent, "&Redo")
        self.redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        parent.addAction(self.undo)
        parent.addAction(self.redo)
        self.set_session(None)

    # -- session -------------------------------------------------------------------------
    def set_session(self, session: Any) -> None:
        """Bind to a review session (None disables every action)."""
        self.session = session
        self.stack.clear()
        self.rebuild_class_actions()
        editable = session is not None and not session.store.read_only
        for a in (self.confirm, self.exclude, self.unsure):
            a.setEnabled(editable)

    def rebuild_class_actions(self) -> None:
        """One action per class (keys 1-9 for the first nine), after classes change."""
        for a in self.class_actions:
            self.window.removeAction(a)
            a.deleteLater()
        self.class_actions = []
        s = self.session
        if s is None:
            return
        editable = not s.store.read_only
        for code, name in enumerate(s.classes):
            a = QAction(f"{code + 1}  {name}" if code < 9 else name, self.window)
            if code < 9:
                a.setShortcut(QKeySequence(str(code + 1)))
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setStatusTip(f"Give the cells the class {name} and move on")
            a.triggered.connect(lambda _=False, c=code: self.do_relabel(c))
            a.setEnabled(editable)
            self.window.addAction(a)
            self.class_actions.append(a)

    def help_rows(self) -> list[tuple[str, str]]:
        """``(keys, meaning)`` rows of the help overlay."""
        rows = []
        if self.session is not None:
            rows += [(str(k + 1), f"Class {name}, then the next cell")
                     for k, name in enumerate(self.session.classes[:9])]
        rows += [(keys, words) for keys, _, words in FIXED_KEYS]
        return rows

    def fill_menu(self, menu: QMenu) -> None:
        """Add the review actions to a menu (the Review menu or a context menu)."""
        menu.addAction(self.confirm)
        if self.class_actions:
            sub = menu.addMenu("Set &class")
            for a in self.class_actions:
                sub.addAction(a)
        menu.addAction(self.exclude)
        menu.addAction(self.unsure)
        menu.addSeparator()
        menu.addAction(self.undo)
        menu.addAction(self.redo)

    # -- commands -------------------------------------------------------------------------
    def _run(self, what: str, command: Callable[[np.ndarray], Any], move_on: bool) -> None:
        s = self.session
        if s is None:
            return
        cells, advance = self.targets()
        if len(cells) == 0:
            self.report("No cell chosen")
            return
        try:
            result = command(cells)
        except (HemaLensError, ValueError) as exc:
            self.report(" ".join(str(exc).split()))
            return
        n = len(cells)
        text = f"{what} {n} cells" if n != 1 else f"{what} cell {int(cells[0])}"
        push_edit(self.stack, s, result, text, on_error=self.report)
        self.report(text if result.action is not None else f"{text}: nothing changed")
        if move_on:
            advance(cells)

    def do_relabel(self, code: int) -> None:
        """Give the target cells class ``code`` and move on."""
        s = self.session
        if s is None or not 0 <= code < len(s.classes):
            return
        name = s.classes[code]
        self._run(f"Class {name} for", lambda c: s.relabel(c, code, source=self), True)

    def do_confirm(self) -> None:
        """Confirm the target cells and move on."""
        s = self.session
        if s is not None:
            self._run("Confirm", lambda c: s.confirm(c, source=self), True)

    def do_exclude(self) -> None:
        """Exclude the target cells ("not classed") and move on."""
        s = self.session
        if s is not None:
            self._run("Exclude", lambda c: s.exclude(c, source=self), True)

    def do_unsure(self) -> None:
        """Mark the target cells unsure and move on."""
        s = self.session
        if s is not None:
            self._run("Mark unsure", lambda c: s.mark_unsure(c, source=self), True)
