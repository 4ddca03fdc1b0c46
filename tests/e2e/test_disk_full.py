"""A full disk during segment, relabel, train, predict and explain: one line, nothing lost.

Each case runs the command line in a subprocess (a crash would show as a signal) on a
project in a small tmpfs that a filler file has filled. Needs root to mount a tmpfs;
skipped otherwise. Slow: run with ``make test-slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="tmpfs")]


def _hemalens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hemalens.engine.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture()
def tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the tmpfs but ``leave`` bytes."""
    filler = mnt / "filler.bin"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as fh:
        fh.truncate(0)
        chunk = b"\0" * (1 << 20)
        left = max(0, free - leave)
        while left > 0:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return filler


def _one_line_no_crash(done: subprocess.CompletedProcess, what: str) -> None:
    assert done.returncode == 2, (what, done.returncode, done.stderr[-2000:])
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "no space left on device" in err[0], (what, done.stderr[-2000:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained, predicted project on the normal disk (copied into the tmpfs)."""
    d = tmp_path_factory.mktemp("full")
    assert _hemalens("synth", "qpi", str(d / "sim"), "--frames", "30", "--seed", "2",
                     "--donors", "1", "--json").returncode == 0
    assert _hemalens("segment", "--manifest", str(d / "sim" / "manifest.csv"), "--modality",
                     "phase", "-o", str(d / "P.hemalens"), "--json").returncode == 0
    assert _hemalens("train", str(d / "P.hemalens"), "--epochs", "1", "--mc", "5",
                     "--json").returncode == 0
    return d


def test_segment_into_a_full_disk(tmpfs, trained):
    _fill(tmpfs, 40 * 1024 * 1024)  # room for less than the project needs
    done = _hemalens("segment", "--manifest", str(trained / "sim" / "manifest.csv"),
                     "--modality", "phase", "-o", str(tmpfs / "P.hemalens"))
    _one_line_no_crash(done, "segment")
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler.bin"]  # temp folder removed


@pytest.mark.parametrize("command", ["relabel", "train", "predict", "explain"])
def test_writes_to_a_full_disk_keep_the_project(tmpfs, trained, command):
    project = tmpfs / "P.hemalens"
    shutil.copytree(trained / "P.hemalens", project)
    from conftest import tree_digest

    before = tree_digest(project)
    _fill(tmpfs, 64 * 1024)
    args = {
        "relabel": ["label", str(project), "--cells", "0-200", "--set", "x" * 60,
                    "--reason", "r" * 2000],
        "train": ["train", str(project), "--epochs", "1", "--mc", "5", "--name", "m2"],
        "predict": ["predict", str(project), "--mc", "5"],
        "explain": ["explain", str(project), "--method", "saliency", "--cells", "0-200"],
    }[command]
    done = _hemalens(*args)
    _one_line_no_crash(done, command)
    assert tree_digest(project) == before
    leftovers = [p.name for p in project.rglob(".hl-*")]
    assert leftovers == []
    (tmpfs / "filler.bin").unlink()  # space again: the project works as before
    info = json.loads(_hemalens("info", str(project), "--json").stdout)
    assert info["models"] and info["history_rows"] == 0
