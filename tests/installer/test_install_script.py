"""installer/linux/install.sh on a stand-in build folder: per user, for all users, uninstall.

The real build is exercised by test_standalone_build.py (slow); the script's file layout
only needs a folder that looks like one (an executable ``hemalens`` and ``_internal/``).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]


@pytest.fixture
def fake_build(tmp_path) -> Path:
    app = tmp_path / "dist" / "hemalens"
    (app / "_internal").mkdir(parents=True)
    (app / "_internal" / "payload.txt").write_text("v1")
    exe = app / "hemalens"
    exe.write_text("#!/bin/sh\necho hemalens 9.9\n")
    exe.chmod(0o755)
    shutil.copy(ROOT / "installer" / "linux" / "install.sh", app / "install.sh")
    for name in ("hemalens.desktop", "hemalens.png", "hemalens.svg"):
        shutil.copy(ROOT / "resources" / name, app / name)
    return app


def _run(app: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["bash", str(app / "install.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=50)


def _desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path)
    return dict(parser["Desktop Entry"])


def test_the_desktop_entry_is_valid():
    entry = _desktop_entry(ROOT / "resources" / "hemalens.desktop")
    assert entry["Type"] == "Application" and entry["Icon"] == "hemalens"
    assert entry["Exec"].split()[0] == "hemalens" and entry["Terminal"] == "false"
    validate = shutil.which("desktop-file-validate")
    if validate:
        out = subprocess.run([validate, str(ROOT / "resources" / "hemalens.desktop")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_install_for_one_user_then_uninstall_keeps_user_data(fake_build, tmp_path):
    home = tmp_path / "home"
    data = home / ".local" / "share" / "HemaLens" / "HemaLens" / "demo.hemalens"
    data.mkdir(parents=True)
    out = _run(fake_build, home)
    assert out.returncode == 0, out.stderr
    app = home / ".local" / "opt" / "hemalens"
    assert (app / "_internal" / "payload.txt").read_text() == "v1"
    link = home / ".local" / "bin" / "hemalens"
    assert link.is_symlink() and link.resolve() == (app / "hemalens").resolve()
    assert subprocess.run([str(link)], capture_output=True, text=True).stdout == "hemalens 9.9\n"
    share = home / ".local" / "share"
    entry = _desktop_entry(share / "applications" / "hemalens.desktop")
    assert entry["Exec"] == f"{app}/hemalens gui" and entry["TryExec"] == f"{app}/hemalens"
    validate = shutil.which("desktop-file-validate")
    if validate:
        out = subprocess.run([validate, str(share / "applications" / "hemalens.desktop")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    assert (share / "icons/hicolor/256x256/apps/hemalens.png").read_bytes() == \
        (ROOT / "resources" / "hemalens.png").read_bytes()
    assert (share / "icons/hicolor/scalable/apps/hemalens.svg").is_file()

    # a reinstall replaces the folder whole (no stale files of the older version)
    (app / "_internal" / "stale.txt").write_text("old")
    (fake_build / "_internal" / "payload.txt").write_text("v2")
    assert _run(fake_build, home).returncode == 0
    assert (app / "_internal" / "payload.txt").read_text() == "v2"
    assert not (app / "_internal" / "stale.txt").exists()
    assert not list(app.parent.glob("hemalens.*"))  # no staging or backup folder left

    out = _run(fake_build, home, "--uninstall")
    assert out.returncode == 0, out.stderr
    assert not app.exists() and not link.exists() and not link.is_symlink()
    assert not (share / "applications" / "hemalens.desktop").exists()
    assert not (share / "icons/hicolor/256x256/apps/hemalens.png").exists()
    assert data.is_dir()  # projects and settings stay


def test_install_for_all_users_under_a_staging_root(fake_build, tmp_path):
    root = tmp_path / "root"
    out = _run(fake_build, tmp_path / "home", "--system", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert (root / "opt/hemalens/hemalens").is_file()
    # the link and the menu entry name the final path, not the staging root
    assert os.readlink(root / "usr/local/bin/hemalens") == "/opt/hemalens/hemalens"
    entry = _desktop_entry(root / "usr/share/applications/hemalens.desktop")
    assert entry["Exec"] == "/opt/hemalens/hemalens gui"
    assert (root / "usr/share/icons/hicolor/256x256/apps/hemalens.png").is_file()
    out = _run(fake_build, tmp_path / "home", "--uninstall", "--system", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert not (root / "opt/hemalens").exists()
    assert not (root / "usr/local/bin/hemalens").is_symlink()


def test_refuses_a_folder_that_is_not_a_build_and_unknown_options(tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(ROOT / "installer" / "linux" / "install.sh", lone / "install.sh")
    out = _run(lone, tmp_path / "home")
    assert out.returncode == 1 and "run me from the built HemaLens folder" in out.stderr
    assert not (tmp_path / "home" / ".local").exists()
    out = _run(lone, tmp_path / "home", "--everyone")
    assert out.returncode == 2 and out.stderr.count("\n") == 1


def test_uninstall_refuses_a_folder_that_is_not_hemalens(fake_build, tmp_path):
    home = tmp_path / "home"
    other = home / ".local" / "opt" / "hemalens"
    other.mkdir(parents=True)
    (other / "important.txt").write_text("keep")
    out = _run(fake_build, home, "--uninstall")
    assert out.returncode == 1 and "not a HemaLens installation" in out.stderr
    assert (other / "important.txt").read_text() == "keep"
