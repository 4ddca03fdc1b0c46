"""Atomic file replacement: write beside the target, flush to disk, then ``os.replace``.

A reader of ``path`` sees either the old file or the complete new one, never a half-written
file, and a crash or an exception leaves the previous file untouched. Temporary files are
named ``<name>.tmp-<random>`` in the target's folder (same file system, so ``os.replace``
is a rename) and are removed on failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TypeVar

from hemalens.engine.errors import ProjectError

T = TypeVar("T")

__all__ = ["AtomicFile", "atomic_update", "atomic_write", "fsync_dir", "fsync_file", "temp_path"]


def temp_path(path: str | PathLike[str]) -> Path:
    """Return an unused temporary file name beside ``path`` (not created).

    Parameters
    ----------
    path : str or PathLike
        The final destination.

    Returns
    -------
    pathlib.Path
        ``<folder>/<name>.tmp-<8 hex digits>``.
    """
    p = Path(path)
    while True:
        cand = p.with_name(f"{p.name}.tmp-{secrets.token_hex(4)}")
        if not cand.exists():
            return cand


def fsync_file(path: str | PathLike[str]) -> None:
    """Flush a closed file's data to the storage device.

    Parameters
    ----------
    path : str or PathLike
        The file; it must be writable (Windows only fsyncs writable handles).
    """
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | PathLike[str]) -> None:
    """Flush a folder's entries (so a rename survives a power cut); no-op where unsupported.

    Parameters
    ----------
    path : str or PathLike
        The folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its rename is journalled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A temporary file beside ``path`` that replaces ``path`` on :meth:`commit`.

    The temporary file is created (empty) at construction so that a missing folder or a
    permission problem shows up before any work is done.

    Parameters
    ----------
    path : str or PathLike
        The final destination.
    copy_existing : bool
        Start from a copy of the current ``path`` (which must exist) instead of empty.

    Raises
    ------
    ProjectError
        The destination is a folder, its folder is missing, or it cannot be written.
    """

    def __init__(self, path: str | PathLike[str], *, copy_existing: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ProjectError(path, "is a folder, not a file")
        if not self.path.parent.is_dir():
            raise ProjectError(path, f"folder {str(self.path.parent)!r} does not exist")
        self.tmp = temp_path(self.path)
        self._done = False
        try:
            if copy_existing:
                shutil.copyfile(self.path, self.tmp)
                shutil.copymode(self.path, self.tmp)
            else:
                # Reserve the name; mode 0o666 & umask, like any file the user creates.
                os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as err:
            self._remove_tmp()
            raise ProjectError(path, f"cannot write beside it: {err.strerror or err}") from err

    def commit(self) -> Path:
        """Flush the temporary file to disk and move it onto ``path``.

        Returns
        -------
        pathlib.Path
            The final path.

        Raises
        ------
        ProjectError
            The move failed (e.g. the target is open in another program on Windows); the
            temporary file is removed and ``path`` is unchanged.
        """
        if self._done:
            raise RuntimeError("AtomicFile already committed or discarded")
        try:
            fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.discard()
            raise ProjectError(
                self.path, f"cannot replace the file: {err.strerror or err} (open elsewhere?)"
            ) from err
        self._done = True
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; ``path`` stays as it was. Safe to call twice."""
        self._done = True
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self.discard()


def atomic_write(path: str | PathLike[str], write_fn: Callable[[Path], T]) -> T:
    """Create ``path`` atomically: ``write_fn(tmp)`` writes a temporary file that replaces it.

    Parameters
    ----------
    path : str or PathLike
        The final destination; an existing file there is only replaced on success.
    write_fn : callable
        Called with the temporary path (an empty file that exists); must write and close it.

    Returns
    -------
    object
        Whatever ``write_fn`` returned.

    Raises
    ------
    ProjectError
        The destination cannot be written. Exceptions from ``write_fn`` propagate after the
        temporary file is removed.
    """
    with AtomicFile(path) as af:
        return write_fn(af.tmp)


_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def path_lock(path: str | PathLike[str]) -> threading.RLock:
    """Return the one re-entrant lock of a file within this process.

    Every read-modify-replace of a file holds it (:func:`atomic_update` does): two threads
    updating at once would each copy the old file and one change would be lost. Hold it
    around a read that decides what to write, too.
    """
    key = Path(path).resolve()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def atomic_update(path: str | PathLike[str], modify_fn: Callable[[Path], T]) -> T:
    """Change ``path`` atomically: copy it beside, ``modify_fn(tmp)`` edits the copy, replace.

    The cost is a full copy of the file per call (about the file size in disk reads and
    writes, plus one fsync), so callers should batch many small changes into one call.

    Parameters
    ----------
    path : str or PathLike
        An existing file.
    modify_fn : callable
        Called with the path of the copy; must leave it closed.

    Returns
    -------
    object
        Whatever ``modify_fn`` returned.

    Raises
    ------
    ProjectError
        ``path`` cannot be copied or replaced. Exceptions from ``modify_fn`` propagate after
        the copy is removed; ``path`` is untouched.
    """
    if not Path(path).is_file():
        raise ProjectError(path, "no such file")
    if not os.access(path, os.W_OK):
        raise ProjectError(path, "file is read-only")
    with path_lock(path), AtomicFile(path, copy_existing=True) as af:
        return modify_fn(af.tmp)
