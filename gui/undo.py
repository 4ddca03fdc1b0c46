"""Undo and redo in the window: a ``QUndoStack`` over the review session's commands.

Every edit is already done (and on disk) when it reaches the stack: the session command
runs first, then :func:`push_edit` pushes a :class:`SessionCommand` whose first ``redo``
is skipped. Undo and redo call the session's, which write new history rows (nothing is
deleted) and refuse when another program changed this user's undo stack meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtGui import QUndoCommand, QUndoStack

from hemalens.engine.errors import HemaLensError

log = logging.getLogger(__name__)


class SessionCommand(QUndoCommand):
    """One session edit on the undo stack.

    Parameters
    ----------
    session : ReviewSession
        The session that made the edit.
    action : int
        The edit's action id in the annotation store.
    text : str
        What the undo history view shows (``"Relabel 3 cells as monocyte"``).
    on_error : callable, optional
        Called with the one-line message when the session refuses an undo or redo.
    """

    def __init__(self, session: Any, action: int, text: str, on_error: Any = None) -> None:
        super().__init__(text)
        self.session = session
        self.action = int(action)
        self.on_error = on_error
        self._first = True

    def redo(self) -> None:  # noqa: D102
        if self._first:  # the edit was made before it was pushed
            self._first = False
            return
        self._call(self.session.redo)

    def undo(self) -> None:  # noqa: D102
        self._call(self.session.undo)

    def _call(self, fn: Any) -> None:
        try:
            fn(expect=self.action, source="undo")
        except HemaLensError as exc:
            log.warning("%s: %s", self.text(), exc)
            if self.on_error is not None:
                self.on_error(str(exc))


def push_edit(stack: QUndoStack, session: Any, result: Any, text: str,
              on_error: Any = None) -> bool:
    """Put an edit the session has made on the window's undo stack.

    Parameters
    ----------
    stack : QUndoStack
        The window's stack.
    session : ReviewSession
        The session.
    result : ActionResult
        What the session command returned (nothing is pushed when it changed nothing).
    text : str
        The history text.
    on_error : callable, optional
        See :class:`SessionCommand`.

    Returns
    -------
    bool
        Whether a command was pushed.
    """
    if result.action is None:
        return False
    stack.push(SessionCommand(session, result.action, text, on_error))
    return True
