"""Read-only tables: the one set-up every panel's results table shares."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QWidget


def read_only_table(
    parent: QWidget,
    headers: Sequence[str] = (),
    *,
    select_rows: bool = False,
    single: bool = False,
) -> QTableWidget:
    """Return a table the user reads but does not edit.

    No row numbers, columns sized to their contents.

    Parameters
    ----------
    parent : QWidget
        Owner of the table.
    headers : sequence of str
        Column titles (none: the caller sets columns later).
    select_rows : bool
        Clicking selects whole rows.
    single : bool
        At most one row selected at a time.

    Returns
    -------
    QTableWidget
    """
    table = QTableWidget(0, len(headers), parent)
    if headers:
        table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    if select_rows:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    if single:
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    return table
