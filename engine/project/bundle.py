"""The project folder: where each part lives, the locks, and whole-folder replacement.

A project is one folder (named ``<name>.hemalens`` by convention) that the user copies,
backs up and shares as one thing::

    <name>.hemalens/
      hemalens-project.json     marker: format, schema_version, project_id, created
      cells.h5                  imported data, written once: /meta, /inputs, /cells,
                                /patches, /labels/classes (HDF5, readable with h5py)
      annotations.sqlite        labels, history, review decisions, sign-offs, settings
                                (SQLite, WAL; see annotations.py)
      derived/                  arrays computed from the data, each file replaced whole:
        models/<name>.h5
        predictions/<model>.h5
        explanations/<model>/<method>/seg-<n>.h5   (append-only segments)
        embeddings/<name>.h5
      README.txt                how to read the project without HemaLens
      .lock                     inter-process lock of writers of derived/

The imported data never changes after import, derived files are replaced atomically
(temporary file + ``os.replace``) under :func:`project_lock`, and edits are SQLite
transactions: no write copies the patches, and a crash at any moment leaves a readable
project.

A whole folder is replaced (``segment --force`` over an old project, the migration of a
version-1 file) by two renames recorded in a journal file beside it;
:func:`recover` finishes or rolls back a replacement that a crash interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from filelock import FileLock, Timeout

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.atomic import (
    fsync_dir,
    os_error_reason,
    remove_stale_temps,
    temp_path,
)
from hemalens.engine.project.schema import FILE_FORMAT

__all__ = [
    "ANNOTATIONS_FILE",
    "CELLS_FILE",
    "DERIVED_KINDS",
    "MARKER_FILE",
    "ProjectPaths",
    "folder_lock",
    "install_folder",
    "is_project_folder",
    "project_lock",
    "read_marker",
    "recover",
    "resolve_project",
]

MARKER_FILE = "hemalens-project.json"
CELLS_FILE = "cells.h5"
ANNOTATIONS_FILE = "annotations.sqlite"
DERIVED_DIR = "derived"
README_FILE = "README.txt"
LOCK_FILE = ".lock"
DERIVED_KINDS = ("models", "predictions", "explanations", "embeddings", "maps")
#: Longest wait for another writer's lock before giving up with a one-line error, s.
LOCK_TIMEOUT_S = 120.0


def item_filename(name: str) -> str:
    """Return the file-name form of a model, method or embedding name (reversible).

    Characters a file system may not take (and ``%``) are percent-encoded; letters,
    digits and ``-_.+@ =,`` stay as they are, so ``lenet5-20240101T120000`` stays readable.
    """
    return quote(name, safe="-_.+@ =,")


def item_name(filename: str) -> str:
    """Inverse of :func:`item_filename`."""
    return unquote(filename)


@dataclass(frozen=True)
class ProjectPaths:
    """The paths of one project folder."""

    root: Path

    @property
    def marker(self) -> Path:  # noqa: D102
        return self.root / MARKER_FILE

    @property
    def cells(self) -> Path:  # noqa: D102
        return self.root / CELLS_FILE

    @property
    def annotations(self) -> Path:  # noqa: D102
        return self.root / ANNOTATIONS_FILE

    @property
    def derived(self) -> Path:  # noqa: D102
        return self.root / DERIVED_DIR

    @property
    def lock(self) -> Path:  # noqa: D102
        return self.root / LOCK_FILE

    def kind_dir(self, kind: str) -> Path:
        """Folder of one kind of derived data (``models``, ``predictions``, ...)."""
        if kind not in DERIVED_KINDS:
            raise ValueError(f"unknown derived kind {kind!r}")
        return self.derived / kind

    def item(self, kind: str, name: str, suffix: str = ".h5") -> Path:
        """Path of one derived item (a model file, a model's predictions, ...)."""
        return self.kind_dir(kind) / (item_filename(name) + suffix)


def is_project_folder(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a project marker file."""
    return (Path(path) / MARKER_FILE).is_file()


def resolve_project(path: str | PathLike[str]) -> Path:
    """Return the project folder a user's path names.

    The folder itself, or any file inside it (``cells.h5``, the marker, as a file dialog
    may give) names the folder. Anything else is returned unchanged (a version-1 project
    file, or a path that does not exist yet).

    Parameters
    ----------
    path : str or PathLike
        What the user gave.

    Returns
    -------
    pathlib.Path
        The folder, or ``path``.
    """
    p = Path(path)
    if p.is_file() and p.name in (CELLS_FILE, MARKER_FILE, ANNOTATIONS_FILE) and (
        is_project_folder(p.parent)
    ):
        return p.parent
    return p


def read_marker(root: Path) -> dict[str, Any]:
    """Read and check a project folder's marker file.

    Raises
    ------
    ProjectError
        Missing, unreadable or foreign marker; a schema newer than this HemaLens reads.
    """
    from hemalens.engine.project.schema import SCHEMA_VERSION

    marker = root / MARKER_FILE
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ProjectError(root, "folder is not a HemaLens project (no marker file "
                                 f"{MARKER_FILE})") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(root, f"damaged project: {MARKER_FILE} is unreadable ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise ProjectError(root, f"damaged project: {MARKER_FILE} does not say "
                                 f"format={FILE_FORMAT!r}")
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 2:
        raise ProjectError(root, f"damaged project: bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise ProjectError(root, f"written with schema version {version}, newer than this "
                                 f"HemaLens reads ({SCHEMA_VERSION}); update HemaLens")
    return data


# -- locks ------------------------------------------------------------------------------------


class _Lock:
    """An inter-process file lock that threads of one process can re-enter."""

    def __init__(self, path: Path) -> None:
        self._file = FileLock(str(path), thread_local=False)
        self._thread = threading.RLock()
        self._depth = 0
        self.path = path

    @contextlib.contextmanager
    def hold(self, timeout: float, what: Path) -> Iterator[None]:
        if not self._thread.acquire(timeout=timeout):
            raise ProjectError(what, "is busy in another thread of this program")
        try:
            if self._depth == 0:
                try:
                    self._file.acquire(timeout=timeout)
                except Timeout as err:
                    raise ProjectError(what, f"is locked by another program for over "
                                             f"{timeout:.0f} s; try again later") from err
                except OSError as err:
                    raise ProjectError(what, f"cannot lock it: {os_error_reason(err)}") from err
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._file.release()
        finally:
            self._thread.release()


_LOCKS: dict[str, _Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> _Lock:
    key = os.path.normcase(os.path.abspath(path))
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _Lock(path)
        return lock


@contextlib.contextmanager
def project_lock(root: str | PathLike[str], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the project's writer lock (other processes and threads wait).

    Held only around the short critical section of a write (checking what is there and
    renaming the new file into place), never around a computation, and never for label
    edits (SQLite locks those itself): a long job does not block a reviewer.

    Parameters
    ----------
    root : str or PathLike
        The project folder.
    timeout : float
        Seconds to wait.

    Raises
    ------
    ProjectError
        Another program holds the lock longer than ``timeout``.
    """
    root = Path(root)
    with _lock_for(root / LOCK_FILE).hold(timeout, root):
        yield


def _folder_lock_path(target: Path) -> Path:
    where = os.path.normcase(os.path.abspath(target)).encode("utf-8", "surrogateescape")
    folder = Path(tempfile.gettempdir()) / f"hemalens-locks-{_user_tag()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / hashlib.sha1(where).hexdigest()


def _user_tag() -> str:
    uid = getattr(os, "getuid", None)
    if uid is not None:
        return str(uid())
    return hashlib.sha1(os.path.expanduser("~").encode("utf-8", "replace")).hexdigest()[:8]


@contextlib.contextmanager
def folder_lock(target: str | PathLike[str], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock for creating, replacing or migrating the project at ``target``.

    The folder itself may not exist yet or be in the middle of a replacement, so this
    lock lives in the user's temporary folder (one file per project path), leaving
    nothing beside the user's projects.
    """
    target = Path(target)
    with _lock_for(_folder_lock_path(target)).hold(timeout, target):
        yield


# -- whole-folder replacement -------------------------------------------------------------


def _journals(target: Path) -> list[tuple[Path, dict[str, str]]]:
    out: list[tuple[Path, dict[str, str]]] = []
    try:
        entries = list(target.parent.glob(".hl-*.journal"))
    except OSError:
        return out
    for j in entries:
        try:
            data = json.loads(j.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("target") == target.name:
            out.append((j, data))
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recover(target: str | PathLike[str]) -> bool:
    """Finish or roll back an interrupted replacement of the project at ``target``.

    Parameters
    ----------
    target : str or PathLike
        The project path.

    Returns
    -------
    bool
        Whether anything was repaired.
    """
    target = Path(target)
    journals = _journals(target)
    if not journals:
        return False
    with folder_lock(target):
        repaired = False
        for journal, data in _journals(target):
            old = target.parent / data.get("old", "")
            new = target.parent / data.get("new", "")
            if not target.exists() and data.get("old") and old.exists():
                os.rename(old, target)  # crashed between the two renames: roll back
            if data.get("new") and new.exists() and new != target:
                _remove(new)
            if data.get("old") and old.exists() and target.exists():
                _remove(old)  # the replacement completed; the previous version goes
            _remove(journal)
            repaired = True
        fsync_dir(target.parent)
        return repaired


def install_folder(tmp: Path, target: Path, *, replace: bool) -> None:
    """Move the finished folder (or file) ``tmp`` to ``target``, replacing what is there.

    With an existing ``target`` (``replace`` must be True) the steps are: write a journal,
    rename ``target`` aside, rename ``tmp`` into place, delete the old version and the
    journal. :func:`recover` completes or undoes these after a crash. The caller holds
    :func:`folder_lock`.

    Raises
    ------
    ProjectError
        ``target`` exists and ``replace`` is False, or a rename failed (nothing replaced).
    """
    try:
        if not target.exists() and not target.is_symlink():
            os.rename(tmp, target)
            fsync_dir(target.parent)
            return
        if not replace:
            raise ProjectError(target, "exists already (use --force to replace it)")
        old = temp_path(target, "old")
        journal = temp_path(target, "journal")
        journal.write_text(json.dumps({"target": target.name, "old": old.name,
                                       "new": tmp.name}), encoding="utf-8")
        fsync_dir(target.parent)
        os.rename(target, old)
        os.rename(tmp, target)
        fsync_dir(target.parent)
        _remove(old)
        _remove(journal)
        fsync_dir(target.parent)
    except OSError as err:
        raise ProjectError(target, f"cannot put the project in place: {os_error_reason(err)}") \
            from err


def clean_stale(root: Path) -> None:
    """Remove temporary files of writers that died, in the project and its derived folders."""
    for folder in (root, root.parent, root / DERIVED_DIR,
                   *(root / DERIVED_DIR / k for k in DERIVED_KINDS)):
        remove_stale_temps(folder)
    expl = root / DERIVED_DIR / "explanations"
    if expl.is_dir():
        for model_dir in expl.iterdir():
            if model_dir.is_dir():
                for method_dir in model_dir.iterdir():
                    if method_dir.is_dir():
                        remove_stale_temps(method_dir)
