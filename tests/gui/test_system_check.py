"""The X11 library check that turns Qt's xcb abort into one actionable line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from hemalens.gui import system_check as sc


def test_xcb_is_needed_only_on_linux_without_another_platform():
    assert sc.needs_xcb("linux", {})
    assert sc.needs_xcb("linux", {"QT_QPA_PLATFORM": "xcb"})
    assert not sc.needs_xcb("linux", {"QT_QPA_PLATFORM": "offscreen"})
    assert not sc.needs_xcb("linux", {"WAYLAND_DISPLAY": "wayland-0"})
    assert not sc.needs_xcb("win32", {})
    assert not sc.needs_xcb("darwin", {})


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ldd") is None,
                    reason="needs Linux and ldd")
def test_a_library_with_a_missing_dependency_is_named(tmp_path):
    # A copy of a real shared library whose needed entry names a soname nobody has.
    import ctypes.util

    lib = ctypes.util.find_library("m")
    source = next(Path(p) for p in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                                    "/lib64", "/usr/lib64", "/lib/aarch64-linux-gnu")
                  if (Path(p) / "libm.so.6").exists()) / "libm.so.6"
    assert lib
    data = source.read_bytes()
    # Rename the dependency "libc.so.6" to a same-length soname that cannot exist.
    assert b"libc.so.6" in data
    broken = tmp_path / "libbroken.so"
    broken.write_bytes(data.replace(b"libc.so.6\x00", b"libq.so.6\x00", 1))
    assert sc.missing_libraries([broken]) == ["libq.so.6"]
    assert sc.missing_libraries([source]) == []


def test_install_line_names_debian_and_fedora_packages():
    line = sc.install_line(["libxcb-cursor.so.0", "libxkbcommon-x11.so.0"])
    assert "apt-get install libxcb-cursor0 libxkbcommon-x11-0" in line
    assert "dnf install libxkbcommon-x11 xcb-util-cursor" in line


def test_run_prints_one_line_and_does_not_start_qt_when_libraries_are_missing(
        monkeypatch, capsys):
    from PySide6.QtWidgets import QApplication

    from hemalens.gui import app

    monkeypatch.setattr(QApplication, "instance", staticmethod(lambda: None))
    monkeypatch.setattr(sc, "xcb_problem", lambda: "cannot open the window: missing libfoo")
    assert app.run() == 3
    err = capsys.readouterr().err
    assert err.strip() == "hemalens: cannot open the window: missing libfoo"
