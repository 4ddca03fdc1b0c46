"""The annotation store: label edits, review decisions and sign-offs in SQLite.

Everything a reviewer changes lives in ``annotations.sqlite`` inside the project folder,
never in the imported HDF5 data, so an edit costs what it changes (a few rows) whatever
the size of the project. Each edit is one SQLite transaction in WAL mode with
``synchronous=FULL``: the call returns only after the write-ahead log is flushed to disk,
so a crash or ``kill -9`` loses at most the edit in flight, and readers in other
processes never see a half-applied edit.

Tables (plain SQL; ``sqlite3 annotations.sqlite .schema`` shows them)::

    meta(key, value)                format, schema_version, project_id, n_cells
    classes(code, name)             every class name; label codes index it
    actions(id, op, time, user, reason, target, n_cells)
                                    one row per command: relabel | confirm | exclude |
                                    unsure | undo | redo (target: the action undone/redone)
    changes(id, action, cell_id, field, old, new)
                                    append-only history: one row per cell and field
                                    ('label': class codes, -1 = none; 'decision': codes of
                                    DECISIONS) that an action changed
    labels(cell_id, label)          current label of every cell ever relabelled
    decisions(cell_id, decision)    current review decision of every decided cell
    undo_stack / redo_stack(user, pos, action)
                                    each user's undo and redo stacks (bookkeeping; the
                                    history itself is never rewritten)
    signoffs(id, sample, kind, user, time, reason, counts_json)
                                    kind 'signoff' or 'reopen'; the newest row of a sample
                                    is its state
    settings(key, value)            project settings that change (the active model)
    VIEW label_history              cell_id, old, new (class names), time, user, reason, op
    VIEW current_labels             cell_id, label (class name) of every relabelled cell

The current label of a cell is its imported ``original_label`` unless ``labels`` holds a
row for it: :meth:`AnnotationStore.current_labels` is the one function that says so.

This module needs only the standard library and NumPy (no HDF5), so a process that only
edits labels starts fast.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import ProjectError

__all__ = [
    "ANNOTATIONS_FORMAT",
    "DECISIONS",
    "EDIT_OPS",
    "ActionResult",
    "AnnotationStore",
    "default_user",
]

ANNOTATIONS_FORMAT = "hemalens-annotations"
ANNOTATIONS_VERSION = 1
#: Review decisions; the index is the code stored (0 = undecided).
DECISIONS = ("undecided", "confirmed", "relabelled", "excluded", "unsure")
#: Commands that edit cells (undo and redo replay their changes).
EDIT_OPS = ("relabel", "confirm", "exclude", "unsure")
_FIELDS = ("label", "decision")
#: Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    target INTEGER REFERENCES actions(id),
    n_cells INTEGER NOT NULL
);
CREATE TABLE changes (
    id INTEGER PRIMARY KEY,
    action INTEGER NOT NULL REFERENCES actions(id),
    cell_id INTEGER NOT NULL,
    field TEXT NOT NULL CHECK (field IN ('label', 'decision')),
    old INTEGER NOT NULL,
    new INTEGER NOT NULL
);
CREATE INDEX changes_by_cell ON changes(cell_id);
CREATE INDEX changes_by_action ON changes(action);
CREATE TABLE labels (cell_id INTEGER PRIMARY KEY, label INTEGER NOT NULL);
CREATE TABLE decisions (cell_id INTEGER PRIMARY KEY, decision INTEGER NOT NULL);
CREATE TABLE undo_stack (user TEXT NOT NULL, pos INTEGER NOT NULL, action INTEGER NOT NULL,
                         PRIMARY KEY (user, pos));
CREATE TABLE redo_stack (user TEXT NOT NULL, pos INTEGER NOT NULL, action INTEGER NOT NULL,
                         PRIMARY KEY (user, pos));
CREATE TABLE signoffs (
    id INTEGER PRIMARY KEY,
    sample TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('signoff', 'reopen')),
    user TEXT NOT NULL,
    time TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    counts_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX signoffs_by_sample ON signoffs(sample);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIEW label_history AS
    SELECT c.cell_id AS cell_id,
           COALESCE(o.name, '') AS old, COALESCE(n.name, '') AS new,
           a.time AS time, a.user AS user, a.reason AS reason, a.op AS op, a.id AS action
    FROM changes c JOIN actions a ON a.id = c.action
    LEFT JOIN classes o ON o.code = c.old LEFT JOIN classes n ON n.code = c.new
    WHERE c.field = 'label' ORDER BY c.id;
CREATE VIEW current_labels AS
    SELECT l.cell_id AS cell_id, COALESCE(c.name, '') AS label
    FROM labels l LEFT JOIN classes c ON c.code = l.label ORDER BY l.cell_id;
"""


def default_user() -> str:
    """Return the operating-system user name (``"unknown"`` when it cannot be found)."""
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers, services)
        return "unknown"
    return name.strip() or "unknown"


def _now(when: datetime | None = None) -> str:
    when = datetime.now(UTC) if when is None else when
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ActionResult:
    """What one command changed.

    Attributes
    ----------
    action : int or None
        Id of the action row (None when nothing changed and nothing was written).
    op : str
        The command.
    cell_ids : numpy.ndarray
        Cells whose label or decision changed.
    labels : numpy.ndarray
        Their label codes after the command (-1 = none).
    decisions : numpy.ndarray
        Their decision codes after the command.
    skipped : int
        Cells an undo/redo left alone because another action changed them since.
    target : int or None
        For undo/redo: the action undone or redone.
    """

    action: int | None
    op: str
    cell_ids: np.ndarray
    labels: np.ndarray
    decisions: np.ndarray
    skipped: int = 0
    target: int | None = None
    new_classes: list[str] = field(default_factory=list)


def _ids(cell_ids: Any, n_cells: int) -> np.ndarray:
    ids = np.asarray(cell_ids).reshape(-1)
    if ids.size == 0:
        return np.zeros(0, np.int64)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"cell ids must be integers, got {ids.dtype}")
    ids = np.unique(ids.astype(np.int64))
    bad = ids[(ids < 0) | (ids >= n_cells)]
    if bad.size:
        more = " ..." if bad.size > 5 else ""
        raise ValueError(f"unknown cell ids {bad[:5].tolist()}{more} (project has {n_cells} cells)")
    return ids


class AnnotationStore:
    """An open ``annotations.sqlite``; see the module docstring.

    Use :meth:`create` for a new project and :meth:`open` afterwards. One store object is
    used by one thread (SQLite connections are not shared); other threads and processes
    open their own.

    Parameters
    ----------
    conn : sqlite3.Connection
        The connection (from :meth:`open`).
    path : pathlib.Path
        The database file.
    original : numpy.ndarray
        ``(n_cells,)`` int16 label codes at import (from the project's cell table).
    read_only : bool
        Whether edits are refused.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: Path, original: np.ndarray, read_only: bool
    ) -> None:
        self._conn = conn
        self.path = path
        self.read_only = read_only
        self.original = np.asarray(original, np.int16)
        self.n_cells = int(self.original.shape[0])

    @classmethod
    @contextlib.contextmanager
    def settings_only(cls, path: str | PathLike[str]) -> Iterator[AnnotationStore]:
        """Open the database for its settings alone (no cell labels are read).

        Parameters
        ----------
        path : str or PathLike
            ``annotations.sqlite``.

        Yields
        ------
        AnnotationStore
            Use :meth:`setting` / :meth:`set_setting` only.
        """
        p = Path(path)
        if not p.is_file():
            raise ProjectError(p, "annotation database is missing")
        try:
            conn = _connect(p, _writable(p))
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise ProjectError(p, f"annotation database is corrupt or not one ({err})") from err
        if meta.get("format") != ANNOTATIONS_FORMAT:
            conn.close()
            raise ProjectError(p, "not a HemaLens annotation database (no format mark)")
        store = cls(conn, p, np.zeros(0, np.int16), not _writable(p))
        try:
            yield store
        finally:
            store.close()

    # -- opening ------------------------------------------------------------------------
    @staticmethod
    def create(
        path: str | PathLike[str], classes: Sequence[str], n_cells: int, project_id: str = ""
    ) -> str:
        """Create an empty annotation database (the file must not exist).

        Parameters
        ----------
        path : str or PathLike
            The new ``annotations.sqlite``.
        classes : sequence of str
            The project's class names at import (codes 0..k-1).
        n_cells : int
            Cells in the project.
        project_id : str
            The project's id (a new UUID when empty).

        Returns
        -------
        str
            The project id written.
        """
        p = Path(path)
        if p.exists():
            raise ProjectError(p, "annotation database exists already")
        pid = project_id or uuid.uuid4().hex
        conn = sqlite3.connect(p, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", ANNOTATIONS_FORMAT), ("schema_version", str(ANNOTATIONS_VERSION)),
                     ("project_id", pid), ("n_cells", str(int(n_cells))),
                     ("created", _now())],
                )
                conn.executemany(
                    "INSERT INTO classes VALUES (?, ?)", list(enumerate(map(str, classes)))
                )
        finally:
            conn.close()
        return pid

    @classmethod
    def open(
        cls,
        path: str | PathLike[str],
        original: np.ndarray,
        *,
        read_only: bool = False,
        project_id: str | None = None,
    ) -> AnnotationStore:
        """Open the annotation database of a project.

        Parameters
        ----------
        path : str or PathLike
            ``annotations.sqlite``.
        original : numpy.ndarray
            The imported label codes of every cell.
        read_only : bool
            Open for reading only (also chosen when the file or its folder cannot be
            written).
        project_id : str, optional
            The id the project's marker gives; a database of another project is refused.

        Returns
        -------
        AnnotationStore

        Raises
        ------
        ProjectError
            Missing, corrupt or foreign database, or one for another project or size.
        """
        p = Path(path)
        if not p.is_file():
            raise ProjectError(p, "annotation database is missing")
        writable = _writable(p)
        read_only = read_only or not writable
        try:
            conn = _connect(p, writable)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise ProjectError(p, f"annotation database is corrupt or not one ({err})") from err
        try:
            if meta.get("format") != ANNOTATIONS_FORMAT:
                raise ProjectError(p, "not a HemaLens annotation database (no format mark)")
            version = int(meta.get("schema_version", "0"))
            if version > ANNOTATIONS_VERSION:
                raise ProjectError(
                    p, f"annotation schema {version} is newer than this HemaLens reads; update"
                )
            if project_id and meta.get("project_id") != project_id:
                raise ProjectError(p, "annotation database belongs to another project")
            n = int(meta.get("n_cells", "-1"))
            if n != len(original):
                raise ProjectError(
                    p, f"annotation database is for {n} cells, the project has {len(original)}"
                )
        except ProjectError:
            conn.close()
            raise
        except ValueError as err:
            conn.close()
            raise ProjectError(p, f"annotation database is corrupt ({err})") from err
        return cls(conn, p, original, read_only)

    def close(self) -> None:
        """Close the connection (a writer's close also checkpoints the log)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """Return every class name (index = code)."""
        rows = self._read("SELECT code, name FROM classes ORDER BY code")
        return [str(name) for _, name in rows]

    def current_labels(self) -> np.ndarray:
        """Return the current label code of every cell: the original plus the edits.

        This is the one function that says what a cell's label is; training, review,
        export and the GUI all read labels through it (``Project.cells["given_label"]``).

        Returns
        -------
        numpy.ndarray
            ``(n_cells,)`` int16, -1 = no label.
        """
        labels = self.original.copy()
        ids, codes = self._pairs("SELECT cell_id, label FROM labels")
        n_classes = int(self._read("SELECT COUNT(*) FROM classes")[0][0])
        if codes.size and (codes.min() < -1 or codes.max() >= n_classes):
            raise ProjectError(self.path, "damaged annotations: label codes outside the "
                                          "class list")
        labels[ids] = codes
        return labels

    def current_decisions(self) -> np.ndarray:
        """Return every cell's review decision code (index into :data:`DECISIONS`).

        Returns
        -------
        numpy.ndarray
            ``(n_cells,)`` int8, 0 = undecided.
        """
        out = np.zeros(self.n_cells, np.int8)
        ids, codes = self._pairs("SELECT cell_id, decision FROM decisions")
        if codes.size and (codes.min() < 0 or codes.max() >= len(DECISIONS)):
            raise ProjectError(self.path, "damaged annotations: unknown review decisions")
        out[ids] = codes
        return out

    def last_change(self) -> int:
        """Return the id of the newest history row (0 when there is none)."""
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM changes")[0][0])

    def changes_since(self, change_id: int) -> dict[str, np.ndarray]:
        """Return the history rows newer than ``change_id`` (to follow other writers).

        Parameters
        ----------
        change_id : int
            The newest row already seen (see :meth:`last_change`).

        Returns
        -------
        dict of str to numpy.ndarray
            ``id``, ``cell_id``, ``field`` (0 label, 1 decision), ``new``; in order.
        """
        rows = self._read(
            "SELECT id, cell_id, field = 'decision', new FROM changes WHERE id > ? ORDER BY id",
            (int(change_id),),
        )
        a = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return {"id": a[:, 0], "cell_id": a[:, 1], "field": a[:, 2], "new": a[:, 3]}

    def history(self, cell_id: int | None = None) -> dict[str, np.ndarray]:
        """Return the history rows (labels and decisions), oldest first.

        Parameters
        ----------
        cell_id : int, optional
            Only this cell's rows.

        Returns
        -------
        dict of str to numpy.ndarray
            ``change``, ``action``, ``cell_id``, ``field`` ("label"/"decision"), ``old``,
            ``new`` (codes), ``time``, ``user``, ``reason``, ``op``.
        """
        sql = ("SELECT c.id, c.action, c.cell_id, c.field, c.old, c.new, a.time, a.user, "
               "a.reason, a.op FROM changes c JOIN actions a ON a.id = c.action")
        args: tuple = ()
        if cell_id is not None:
            sql += " WHERE c.cell_id = ?"
            args = (int(cell_id),)
        rows = self._read(sql + " ORDER BY c.id", args)
        cols = list(zip(*rows, strict=True)) if rows else [()] * 10
        names = ("change", "action", "cell_id", "field", "old", "new", "time", "user",
                 "reason", "op")
        out: dict[str, np.ndarray] = {}
        for name, values in zip(names, cols, strict=True):
            if name in ("change", "action", "cell_id"):
                out[name] = np.asarray(values, np.int64)
            elif name in ("old", "new"):
                out[name] = np.asarray(values, np.int16)
            else:
                out[name] = np.asarray(values, dtype=str)
        return out

    def label_history_rows(self) -> int:
        """Return the number of label rows in the history."""
        return int(self._read("SELECT COUNT(*) FROM changes WHERE field = 'label'")[0][0])

    def action(self, action_id: int) -> dict[str, Any] | None:
        """Return one action row as a dict (None when there is no such action)."""
        rows = self._read(
            "SELECT id, op, time, user, reason, target, n_cells FROM actions WHERE id = ?",
            (int(action_id),),
        )
        if not rows:
            return None
        keys = ("id", "op", "time", "user", "reason", "target", "n_cells")
        return dict(zip(keys, rows[0], strict=True))

    def undo_stack(self, user: str) -> list[int]:
        """Return the user's undoable actions, oldest first (the last is undone next)."""
        return [int(r[0]) for r in self._read(
            "SELECT action FROM undo_stack WHERE user = ? ORDER BY pos", (user,))]

    def redo_stack(self, user: str) -> list[int]:
        """Return the user's redoable actions, oldest first (the last is redone next)."""
        return [int(r[0]) for r in self._read(
            "SELECT action FROM redo_stack WHERE user = ? ORDER BY pos", (user,))]

    def signoffs(self, sample: str | None = None) -> list[dict[str, Any]]:
        """Return the sign-off rows (all samples, or one), oldest first."""
        sql = "SELECT id, sample, kind, user, time, reason, counts_json FROM signoffs"
        args: tuple = ()
        if sample is not None:
            sql += " WHERE sample = ?"
            args = (str(sample),)
        out = []
        for row in self._read(sql + " ORDER BY id", args):
            rec = dict(zip(("id", "sample", "kind", "user", "time", "reason", "counts"), row,
                           strict=True))
            try:
                rec["counts"] = json.loads(rec["counts"] or "{}")
            except (ValueError, RecursionError):
                rec["counts"] = {}  # the sign-off stands; its summary is unreadable
            out.append(rec)
        return out

    def signed_samples(self) -> dict[str, dict[str, Any]]:
        """Return the samples whose newest sign-off row is a sign-off (not reopened)."""
        state: dict[str, dict[str, Any]] = {}
        for rec in self.signoffs():
            state[rec["sample"]] = rec
        return {s: r for s, r in state.items() if r["kind"] == "signoff"}

    def setting(self, key: str, default: str | None = None) -> str | None:
        """Return a project setting (e.g. ``active_model``)."""
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else default

    # -- writing ------------------------------------------------------------------------
    def apply(
        self,
        op: str,
        cell_ids: Any,
        *,
        user: str,
        labels: Any = None,
        label_name: str | None = None,
        decision: str | None = None,
        reason: str = "",
        when: datetime | None = None,
    ) -> ActionResult:
        """Run one edit command as one durable transaction.

        Parameters
        ----------
        op : {"relabel", "confirm", "exclude", "unsure"}
            The command (recorded in the history).
        cell_ids : array_like of int
            The cells (repeats count once).
        user : str
            Who (non-empty).
        labels : int or array_like of int, optional
            New label code for every cell (or one per cell, in ascending cell-id order);
            None leaves labels alone.
        label_name : str, optional
            Instead of ``labels``: a class name for every cell, added to the classes if
            new (in the same transaction).
        decision : str, optional
            New decision (a name of :data:`DECISIONS`) for every cell. ``"relabelled"``
            is recorded only where the label changed; the rest get ``"confirmed"``.
        reason : str
            Why (free text).
        when : datetime, optional
            Time recorded (default now).

        Returns
        -------
        ActionResult
            The changes (``action`` None when nothing changed).

        Raises
        ------
        ValueError
            Unknown op, cells, label codes or decision; nothing is written.
        ProjectError
            Read-only project, disk full, or the database is locked too long.
        """
        if op not in EDIT_OPS:
            raise ValueError(f"unknown edit {op!r}; one of {EDIT_OPS}")
        user = _user(user)
        ids = _ids(cell_ids, self.n_cells)
        dcode = None
        if decision is not None:
            if decision not in DECISIONS:
                raise ValueError(f"unknown decision {decision!r}; one of {DECISIONS}")
            dcode = DECISIONS.index(decision)
        if label_name is not None:
            if labels is not None:
                raise ValueError("give labels or label_name, not both")
            label_name = str(label_name).strip()
            if not label_name:
                raise ValueError("empty class name (use label code -1 to remove a label)")
        with self._write() as conn:
            new_classes: list[str] = []
            if label_name is not None:
                labels, added = _class_in(conn, label_name)
                if added:
                    new_classes.append(label_name)
            n_classes = int(conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0])
            new_labels = None
            if labels is not None:
                new_labels = np.broadcast_to(np.asarray(labels), ids.shape).astype(np.int64)
                if new_labels.size and (new_labels.min() < -1 or new_labels.max() >= n_classes):
                    raise ValueError(f"label codes outside -1..{n_classes - 1}")
            old_labels = self._labels_of(conn, ids)
            old_dec = self._decisions_of(conn, ids)
            changes: list[tuple[int, str, int, int]] = []
            lab = old_labels.copy()
            if new_labels is not None:
                moved = new_labels != old_labels
                lab = new_labels.copy()
                changes += [(int(i), "label", int(o), int(n)) for i, o, n in
                            zip(ids[moved], old_labels[moved], new_labels[moved], strict=True)]
            else:
                moved = np.zeros(ids.shape, bool)
            dec = old_dec.copy()
            if dcode is not None:
                dec[:] = dcode
                if decision == "relabelled":
                    dec[~moved] = DECISIONS.index("confirmed")
                dmoved = dec != old_dec
                changes += [(int(i), "decision", int(o), int(n)) for i, o, n in
                            zip(ids[dmoved], old_dec[dmoved], dec[dmoved], strict=True)]
            else:
                dmoved = np.zeros(ids.shape, bool)
            touched = moved | dmoved
            if not changes:
                return ActionResult(None, op, np.zeros(0, np.int64), np.zeros(0, np.int16),
                                    np.zeros(0, np.int8), new_classes=new_classes)
            action = self._record(conn, op, user, reason, when, None, changes)
            conn.execute("INSERT INTO undo_stack VALUES (?, "
                         "(SELECT COALESCE(MAX(pos), 0) + 1 FROM undo_stack WHERE user = ?), ?)",
                         (user, user, action))
            conn.execute("DELETE FROM redo_stack WHERE user = ?", (user,))
        return ActionResult(action, op, ids[touched], lab[touched].astype(np.int16),
                            dec[touched].astype(np.int8), new_classes=new_classes)

    def undo(self, user: str, *, reason: str = "", when: datetime | None = None) -> ActionResult:
        """Undo the user's newest undoable action (a new history row, nothing deleted).

        Cells that another action changed since keep their newer value (counted in
        ``skipped``).

        Parameters
        ----------
        user : str
            Whose action.
        reason : str
            Recorded with the undo.
        when : datetime, optional
            Time recorded.

        Returns
        -------
        ActionResult
            What changed; ``action`` None when there was nothing to undo.
        """
        return self._replay(_user(user), "undo", reason, when)

    def redo(self, user: str, *, reason: str = "", when: datetime | None = None) -> ActionResult:
        """Redo the user's most recently undone action (see :meth:`undo`)."""
        return self._replay(_user(user), "redo", reason, when)

    def record_signoff(
        self,
        sample: str,
        *,
        user: str,
        kind: str = "signoff",
        counts: dict[str, Any] | None = None,
        reason: str = "",
        when: datetime | None = None,
    ) -> int:
        """Append a sign-off (or reopen) row for a sample; the caller checks the rules.

        Returns
        -------
        int
            The row id.
        """
        if kind not in ("signoff", "reopen"):
            raise ValueError(f"kind must be 'signoff' or 'reopen', got {kind!r}")
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO signoffs (sample, kind, user, time, reason, counts_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (str(sample), kind, _user(user), _now(when), str(reason),
                 json.dumps(counts or {}, default=str)),
            )
            return int(cur.lastrowid or 0)

    def set_setting(self, key: str, value: str | None) -> None:
        """Set (or with None, remove) a project setting, durably."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, str(value)))

    def ensure_class(self, name: str) -> int:
        """Return the code of class ``name``, adding it (durably) when the project lacks it."""
        name = str(name).strip()
        if not name:
            raise ValueError("empty class name")
        with self._write() as conn:
            return _class_in(conn, name)[0]

    def class_code(self, name: str) -> int | None:
        """Return the code of class ``name`` (None when the project has no such class)."""
        rows = self._read("SELECT code FROM classes WHERE name = ?", (str(name).strip(),))
        return int(rows[0][0]) if rows else None

    # -- internals ----------------------------------------------------------------------
    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise ProjectError(self.path, f"cannot read annotations: {err}") from err

    def _pairs(self, sql: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._read(sql)
        a = np.array(rows, dtype=np.int64).reshape(-1, 2)
        ok = (a[:, 0] >= 0) & (a[:, 0] < self.n_cells)
        return a[ok, 0], a[ok, 1]

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise ProjectError(self.path.parent, "project is read-only; edits cannot be saved")
        try:
            with _transaction(self._conn) as conn:
                yield conn
        except sqlite3.OperationalError as err:
            raise _write_error(self.path, err) from err

    @staticmethod
    def _ids_param(ids: np.ndarray) -> str:
        return json.dumps(ids.tolist())

    def _labels_of(self, conn: sqlite3.Connection, ids: np.ndarray) -> np.ndarray:
        out = self.original[ids].astype(np.int64)
        if ids.size == 1:
            row = conn.execute("SELECT label FROM labels WHERE cell_id = ?",
                               (int(ids[0]),)).fetchone()
            if row is not None:
                out[0] = row[0]
            return out
        rows = conn.execute("SELECT cell_id, label FROM labels WHERE cell_id IN "
                            "(SELECT value FROM json_each(?))", (self._ids_param(ids),)).fetchall()
        if rows:
            a = np.array(rows, np.int64)
            out[np.searchsorted(ids, a[:, 0])] = a[:, 1]
        return out

    def _decisions_of(self, conn: sqlite3.Connection, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(ids.shape, np.int64)
        if ids.size == 1:
            row = conn.execute("SELECT decision FROM decisions WHERE cell_id = ?",
                               (int(ids[0]),)).fetchone()
            if row is not None:
                out[0] = row[0]
            return out
        rows = conn.execute("SELECT cell_id, decision FROM decisions WHERE cell_id IN "
                            "(SELECT value FROM json_each(?))", (self._ids_param(ids),)).fetchall()
        if rows:
            a = np.array(rows, np.int64)
            out[np.searchsorted(ids, a[:, 0])] = a[:, 1]
        return out

    def _record(
        self,
        conn: sqlite3.Connection,
        op: str,
        user: str,
        reason: str,
        when: datetime | None,
        target: int | None,
        changes: list[tuple[int, str, int, int]],
    ) -> int:
        """Write the action, its history rows and the new current values."""
        n_cells = len({c[0] for c in changes})
        cur = conn.execute(
            "INSERT INTO actions (op, time, user, reason, target, n_cells) VALUES (?,?,?,?,?,?)",
            (op, _now(when), user, str(reason), target, n_cells),
        )
        action = int(cur.lastrowid or 0)
        conn.executemany(
            "INSERT INTO changes (action, cell_id, field, old, new) VALUES (?, ?, ?, ?, ?)",
            [(action, *c) for c in changes],
        )
        conn.executemany(
            "INSERT INTO labels VALUES (?, ?) ON CONFLICT(cell_id) DO UPDATE "
            "SET label = excluded.label",
            [(c[0], c[3]) for c in changes if c[1] == "label"],
        )
        decided = [(c[0], c[3]) for c in changes if c[1] == "decision"]
        conn.executemany(
            "INSERT INTO decisions VALUES (?, ?) ON CONFLICT(cell_id) DO UPDATE "
            "SET decision = excluded.decision",
            [d for d in decided if d[1] != 0],
        )
        conn.executemany("DELETE FROM decisions WHERE cell_id = ?",
                         [(d[0],) for d in decided if d[1] == 0])
        return action

    def _replay(self, user: str, op: str, reason: str, when: datetime | None) -> ActionResult:
        src, dst = ("undo_stack", "redo_stack") if op == "undo" else ("redo_stack", "undo_stack")
        empty = ActionResult(None, op, np.zeros(0, np.int64), np.zeros(0, np.int16),
                             np.zeros(0, np.int8))
        with self._write() as conn:
            top = conn.execute(f"SELECT pos, action FROM {src} WHERE user = ? "  # noqa: S608
                               "ORDER BY pos DESC LIMIT 1", (user,)).fetchone()
            if top is None:
                return empty
            pos, target = int(top[0]), int(top[1])
            rows = conn.execute("SELECT cell_id, field, old, new FROM changes WHERE action = ? "
                                "ORDER BY id", (target,)).fetchall()
            ids = np.unique(np.array([r[0] for r in rows], np.int64))
            cur_lab = self._labels_of(conn, ids)
            cur_dec = self._decisions_of(conn, ids)
            changes: list[tuple[int, str, int, int]] = []
            skipped: set[int] = set()
            for cell, fld, old, new in rows:
                pos = int(np.searchsorted(ids, cell))
                current = cur_lab if fld == "label" else cur_dec
                frm, to = (new, old) if op == "undo" else (old, new)
                if current[pos] != frm:
                    skipped.add(int(cell))  # changed by a later action: keep the newer value
                    continue
                current[pos] = to
                changes.append((int(cell), fld, int(frm), int(to)))
            conn.execute(f"DELETE FROM {src} WHERE user = ? AND pos = ?", (user, pos))  # noqa: S608
            conn.execute(f"INSERT INTO {dst} VALUES (?, (SELECT COALESCE(MAX(pos), 0) + 1 "  # noqa: S608
                         f"FROM {dst} WHERE user = ?), ?)", (user, user, target))
            if not changes:
                return ActionResult(None, op, np.zeros(0, np.int64), np.zeros(0, np.int16),
                                    np.zeros(0, np.int8), skipped=len(skipped), target=target)
            action = self._record(conn, op, user, reason, when, target, changes)
        touched = np.unique(np.array([c[0] for c in changes], np.int64))
        k = np.searchsorted(ids, touched)
        return ActionResult(action, op, touched, cur_lab[k].astype(np.int16),
                            cur_dec[k].astype(np.int8), skipped=len(skipped), target=target)


# -- connection helpers ----------------------------------------------------------------------


def _class_in(conn: sqlite3.Connection, name: str) -> tuple[int, bool]:
    """Code of class ``name`` inside a write transaction, adding it when new."""
    row = conn.execute("SELECT code FROM classes WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0]), False
    code = int(conn.execute("SELECT COALESCE(MAX(code), -1) + 1 FROM classes").fetchone()[0])
    conn.execute("INSERT INTO classes VALUES (?, ?)", (code, name))
    return code, True


def _user(user: str) -> str:
    name = str(user or "").strip()
    if not name:
        raise ValueError("an edit needs the user's name")
    return name


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(path: Path, writable: bool) -> sqlite3.Connection:
    """Open with explicit transactions (BEGIN ... COMMIT), WAL, FULL sync, a busy timeout.

    A reader in a writable folder opens a normal connection too (it only reads): SQLite's
    read-only modes are for folders the user cannot write to.
    """
    if not writable:
        # mode=ro still needs the -shm file of a WAL database; immutable=1 reads a database
        # that no writer has open (a folder without write permission) without it.
        uri = path.resolve().as_uri()
        wal = path.with_name(path.name + "-wal")
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            conn.execute("SELECT 1 FROM meta LIMIT 1")
        except sqlite3.OperationalError:
            if wal.exists() and wal.stat().st_size > 0:
                raise
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
        return conn
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit returns after the WAL is fsynced (NORMAL would survive kill -9 but
    # may lose the last commits on power loss); measured cost in benchmarks/RESULTS.md.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock first: no upgrade deadlocks), COMMIT or ROLLBACK."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # a failing COMMIT (disk full) is rolled back below too
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _write_error(path: Path, err: sqlite3.OperationalError) -> ProjectError:
    text = str(err)
    if "full" in text or getattr(err, "sqlite_errorcode", None) == 13:
        return ProjectError(path, f"no space left on device; the edit was not saved ({text})")
    if "locked" in text or "busy" in text:
        return ProjectError(path, f"another program holds the project for too long ({text}); "
                                  "the edit was not saved")
    if "readonly" in text or "read-only" in text:
        return ProjectError(path, "project is read-only; the edit was not saved")
    return ProjectError(path, f"cannot save the edit: {text}")
