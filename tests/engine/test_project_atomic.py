"""Atomic saves: nothing half-written, the previous version survives any failure."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Cancelled
from hemalens.engine.project import atomic
from hemalens.engine.project.atomic import AtomicFile, atomic_write, remove_stale_temps
from hemalens.engine.project.store import Project, ProjectWriter

S = 8


def write_project(path, n: int, fail_after: int | None = None, exc=RuntimeError):
    """Write n cells in batches of 4; optionally raise after ``fail_after`` batches."""
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=["a"]) as w:
        w.add_input({"file": "x.tif"})
        for b, start in enumerate(range(0, n, 4)):
            if fail_after is not None and b == fail_after:
                raise exc("stop")
            k = min(4, n - start)
            w.append({"x": np.arange(start, start + k, dtype=float)}, np.full((k, S, S), 0.5))


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    assert atomic_write(target, lambda tmp: tmp.write_text("new") and 42) == 42
    assert target.read_text() == "new"

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def test_atomic_file_bad_destinations(tmp_path):
    with pytest.raises(ProjectError, match="does not exist") as info:
        AtomicFile(tmp_path / "no" / "such" / "p.h5")
    assert str(info.value).startswith(str(tmp_path / "no" / "such" / "p.h5"))
    with pytest.raises(ProjectError, match="is a folder"):
        AtomicFile(tmp_path)


@posix_only
def test_new_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_commit_failure_leaves_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    target.write_text("old")

    def no_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", no_replace)
    with pytest.raises(ProjectError, match="cannot save: permission denied; the file is unchanged"):
        atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def _visible(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("exc", [RuntimeError, Cancelled, KeyboardInterrupt])
def test_writer_exception_leaves_nothing(tmp_path, exc):
    path = tmp_path / "new.hemalens"
    with pytest.raises(exc):
        write_project(path, 20, fail_after=3, exc=exc)
    assert list(tmp_path.iterdir()) == []


def _tree(path):
    # SQLite's -wal/-shm files come and go with connections; the data is the rest
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_writer_exception_keeps_existing_project(tmp_path):
    path = tmp_path / "p.hemalens"
    write_project(path, 10)
    before = _tree(path)
    with pytest.raises(Cancelled):
        write_project(path, 40, fail_after=2, exc=Cancelled)
    assert _tree(path) == before
    assert _visible(tmp_path) == ["p.hemalens"]
    with Project.open(path) as p:
        assert p.n_cells == 10
        np.testing.assert_array_equal(p.cells["x"], np.arange(10))


def test_writer_builds_a_hidden_folder_beside_then_replaces(tmp_path):
    path = tmp_path / "p.hemalens"
    write_project(path, 5)
    w = ProjectWriter(path, patch_kind="phase", patch_shape=(S, S))
    names = _visible(tmp_path)
    assert names[0].startswith(".hl-") and names[0].endswith(".tmp") and names[1] == "p.hemalens"
    assert len(names[0]) < 40  # short whatever the project's name
    w.append({"x": [7.0]}, np.zeros((1, S, S)))
    with Project.open(path) as p:  # still the old project until close()
        assert p.n_cells == 5
    assert w.close() == str(path)
    assert _visible(tmp_path) == ["p.hemalens"]
    with Project.open(path) as p:
        assert p.n_cells == 1 and p.cells["x"][0] == 7.0


def test_writer_discard(tmp_path):
    w = ProjectWriter(tmp_path / "p.hemalens", patch_kind="rgb", patch_shape=(S, S, 3))
    w.append({}, np.zeros((2, S, S, 3), np.uint8))
    w.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_long_project_name_fits(tmp_path):
    path = tmp_path / ("n" * 240 + ".hemalens")
    write_project(path, 3)
    with Project.open(path) as p:
        assert p.n_cells == 3


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale_file = tmp_path / f".hl-{pid}-0123abcd.tmp"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".hl-{pid}-89abcdef.tmp"
    stale_dir.mkdir()
    (stale_dir / "cells.h5").write_bytes(b"y")
    alive = tmp_path / f".hl-{os.getpid()}-fedcba98.tmp"
    alive.write_bytes(b"z")
    other = tmp_path / "keep.tmp"
    other.write_bytes(b"k")
    assert remove_stale_temps(tmp_path) == 2
    assert _visible(tmp_path) == [alive.name, "keep.tmp"]


def test_an_existing_project_with_edits_is_not_replaced_without_force(tmp_path):
    from hemalens.engine.project import relabel

    path = tmp_path / "p.hemalens"
    write_project(path, 4)
    write_project(path, 6)  # no edits yet: replaced like any output
    relabel(path, [0], "b", user="ann")
    with pytest.raises(ProjectError, match="holding 1 reviewer edit"):
        write_project(path, 8)
    with Project.open(path) as p:
        assert p.n_cells == 6 and p.history_rows == 1
    w = ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), overwrite=True)
    w.append({}, np.zeros((2, S, S)))
    w.close()
    with Project.open(path) as p:
        assert p.n_cells == 2 and p.history_rows == 0


def test_a_foreign_file_or_folder_is_never_replaced_unasked(tmp_path):
    raw = tmp_path / "raw.tif"
    raw.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(ProjectError, match="not a HemaLens project; use --force"):
        write_project(raw, 2)
    assert raw.read_bytes().startswith(b"II*")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"j")
    for overwrite in (False, True):
        with pytest.raises(ProjectError, match="folder that is not a HemaLens project"):
            ProjectWriter(folder, patch_kind="phase", patch_shape=(S, S), overwrite=overwrite)
    assert (folder / "a.jpg").exists()
    w = ProjectWriter(raw, patch_kind="phase", patch_shape=(S, S), overwrite=True)
    w.close()
    assert raw.is_dir()
