"""Atomic file replacement: write beside the target, flush to disk, then ``os.replace``.

A reader of ``path`` sees either the old file or the complete new one, never a half-written
file, and a crash or an exception leaves the previous file untouched. Temporary files are
named ``.hl-<pid>-<random>.tmp`` in the target's folder: short whatever the target's name
(a 250-character name still fits the file system's limit), on the same file system (so
``os.replace`` is a rename), and naming the writer's process so that
:func:`remove_stale_temps` can tell an abandoned temporary file from one still being written.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TypeVar

from hemalens.engine.errors import ProjectError

T = TypeVar("T")

__all__ = [
    "FREE_SPACE_MARGIN",
    "AtomicFile",
    "atomic_write",
    "ensure_free_space",
    "fsync_dir",
    "fsync_file",
    "os_error_reason",
    "remove_stale_temps",
    "temp_path",
]

#: Bytes kept free beyond what a write needs: HDF5's metadata, SQLite's journal, the OS.
FREE_SPACE_MARGIN = 32 * 1024 * 1024

_TEMP_RE = re.compile(r"^\.hl-(\d+)-[0-9a-f]{8}\.(tmp|old|journal)$")


def os_error_reason(err: OSError) -> str:
    """Return the one-line reason for a failed write (full disk, read-only, ...).

    Parameters
    ----------
    err : OSError
        The error.

    Returns
    -------
    str
        E.g. ``"no space left on device"``.
    """
    if err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
        return "no space left on device"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return (err.strerror or str(err) or type(err).__name__).strip()


def ensure_free_space(folder: str | PathLike[str], nbytes: int, what: str | PathLike[str]) -> None:
    """Refuse a write that would not fit on the disk, before anything is written.

    HDF5 cannot recover from a full disk (closing a file whose write failed crashes the
    process: h5py issues 914 and 1120), so writers check first.

    Parameters
    ----------
    folder : str or PathLike
        Where the data will go.
    nbytes : int
        An upper bound of the bytes about to be written.
    what : str or PathLike
        The file or project named in the message.

    Raises
    ------
    ProjectError
        ``"<what>: no space left on device (needs ... MB, ... MB free); nothing was saved"``.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (a vanished folder fails later with its own message)
    need = int(nbytes) + FREE_SPACE_MARGIN
    if free < need:
        raise ProjectError(what, f"no space left on device (needs about {need / 1e6:.0f} MB, "
                                 f"{free / 1e6:.0f} MB free); nothing was saved")


def temp_path(path: str | PathLike[str], suffix: str = "tmp") -> Path:
    """Return an unused temporary name in the folder of ``path`` (not created).

    Parameters
    ----------
    path : str or PathLike
        The final destination.
    suffix : str
        ``tmp`` (default), ``old`` or ``journal``.

    Returns
    -------
    pathlib.Path
        ``<folder>/.hl-<pid>-<8 hex digits>.<suffix>``.
    """
    folder = Path(path).parent
    while True:
        cand = folder / f".hl-{os.getpid()}-{secrets.token_hex(4)}.{suffix}"
        if not cand.exists():
            return cand


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell (e.g. Windows quirks): keep the file
    return True


def remove_stale_temps(folder: str | PathLike[str], *, kinds: tuple[str, ...] = ("tmp",)) -> int:
    """Delete temporary files and folders left by writers that are gone.

    Parameters
    ----------
    folder : str or PathLike
        Where to look (not recursive).
    kinds : tuple of str
        Which suffixes to clean (``tmp``; ``old`` and ``journal`` belong to an
        interrupted replacement and are handled by the project recovery).

    Returns
    -------
    int
        How many entries were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m.group(2) not in kinds or _pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


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

    Raises
    ------
    ProjectError
        The destination is a folder, its folder is missing, or it cannot be written.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ProjectError(path, "is a folder, not a file")
        if not self.path.parent.is_dir():
            raise ProjectError(path, f"folder {str(self.path.parent)!r} does not exist")
        self.tmp = temp_path(self.path)
        self._done = False
        try:
            # Reserve the name; mode 0o666 & umask, like any file the user creates.
            os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as err:
            self._remove_tmp()
            raise ProjectError(path, f"cannot write beside it: {os_error_reason(err)}") from err

    def commit(self) -> Path:
        """Flush the temporary file to disk and move it onto ``path``.

        Returns
        -------
        pathlib.Path
            The final path.

        Raises
        ------
        ProjectError
            The flush or move failed (a full disk, the target open in another program on
            Windows); the temporary file is removed and ``path`` is unchanged.
        """
        if self._done:
            raise RuntimeError("AtomicFile already committed or discarded")
        try:
            fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.discard()
            raise ProjectError(
                self.path, f"cannot save: {os_error_reason(err)}; the file is unchanged"
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
        except OSError:  # gone already, or a read-only folder: nothing more to do
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
        The destination cannot be written, or the disk filled up (the temporary file is
        removed and ``path`` is unchanged). Other exceptions from ``write_fn`` propagate
        after the temporary file is removed.
    """
    with AtomicFile(path) as af:
        try:
            return write_fn(af.tmp)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise ProjectError(
                    path, f"cannot save: {os_error_reason(err)}; the file is unchanged"
                ) from err
            raise
