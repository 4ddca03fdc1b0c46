"""Atomic saves: nothing half-written, the previous file survives any failure."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Cancelled
from hemalens.engine.project import atomic
from hemalens.engine.project.atomic import AtomicFile, atomic_update, atomic_write
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


@posix_only
def test_atomic_update_edits_a_copy(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"abc")
    os.chmod(target, 0o640)

    def edit(tmp):
        assert tmp != target and tmp.parent == target.parent
        assert tmp.read_bytes() == b"abc"
        tmp.write_bytes(b"abcd")
        return "ok"

    assert atomic_update(target, edit) == "ok"
    assert target.read_bytes() == b"abcd"
    assert target.stat().st_mode & 0o777 == 0o640  # the copy kept the permissions

    def edit_then_fail(tmp):
        tmp.write_bytes(b"garbage")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        atomic_update(target, edit_then_fail)
    assert target.read_bytes() == b"abcd"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
    with pytest.raises(ProjectError, match="no such file"):
        atomic_update(tmp_path / "missing.bin", edit)


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
    with pytest.raises(ProjectError, match="cannot replace the file: Permission denied"):
        atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, Cancelled, KeyboardInterrupt])
def test_writer_exception_leaves_no_file(tmp_path, exc):
    path = tmp_path / "new.h5"
    with pytest.raises(exc):
        write_project(path, 20, fail_after=3, exc=exc)
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_keeps_existing_project(tmp_path):
    path = tmp_path / "p.h5"
    write_project(path, 10)
    before = path.read_bytes()
    with pytest.raises(Cancelled):
        write_project(path, 40, fail_after=2, exc=Cancelled)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.h5"]
    with Project.open(path) as p:
        assert p.n_cells == 10
        np.testing.assert_array_equal(p.cells["x"], np.arange(10))


def test_writer_temp_file_beside_target_then_replaced(tmp_path):
    path = tmp_path / "p.h5"
    write_project(path, 5)
    w = ProjectWriter(path, patch_kind="phase", patch_shape=(S, S))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "p.h5" and names[1].startswith("p.h5.tmp-")  # matches .gitignore
    w.append({"x": [7.0]}, np.zeros((1, S, S)))
    with Project.open(path) as p:  # still the old project until close()
        assert p.n_cells == 5
    assert w.close() == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["p.h5"]
    with Project.open(path) as p:
        assert p.n_cells == 1 and p.cells["x"][0] == 7.0


def test_writer_discard(tmp_path):
    w = ProjectWriter(tmp_path / "p.h5", patch_kind="rgb", patch_shape=(S, S, 3))
    w.append({}, np.zeros((2, S, S, 3), np.uint8))
    w.discard()
    assert list(tmp_path.iterdir()) == []
