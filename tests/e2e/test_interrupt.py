"""Ctrl+C and SIGTERM cancel a running command like the GUI's Cancel: nothing replaced,
temporary files removed, exit status 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sig")
    done = subprocess.run([sys.executable, "-m", "hemalens.engine.cli", "synth", "qpi",
                           str(d / "sim"), "--frames", "400", "--seed", "4", "--donors", "1",
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return d


def _segment_and_signal(sim: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hemalens.engine.cli", "segment", "--manifest",
         str(sim / "sim" / "manifest.csv"), "--modality", "phase", "-o", str(out)],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is writing its temporary folder
        if any(p.name.startswith(".hl-") for p in out.parent.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_segment_cancels_and_keeps_the_old_project(sim, tmp_path, sig, code):
    out = tmp_path / "P.hemalens"
    out.mkdir()  # an earlier project ...
    (out / "hemalens-project.json").write_text(
        '{"format": "hemalens-project", "schema_version": 2}')
    before = sorted(p.name for p in out.iterdir())
    done = _segment_and_signal(sim, out, sig)
    assert done.returncode == code, done.stderr
    assert "cancelled; nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # ... is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["P.hemalens"]  # no temp folder left


def test_outputs_never_overwrite_inputs(sim, tmp_path, capsys):
    from hemalens.engine.cli import main

    tif = sorted((sim / "sim").glob("*.tif"))[0]
    data = tif.read_bytes()
    assert main(["segment", str(tif), "-o", str(tif)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err and tif.read_bytes() == data
    link = tmp_path / "link.tif"
    link.symlink_to(tif)
    assert main(["segment", str(tif), "-o", str(link)]) == 2  # the same file via a link
    manifest = sim / "sim" / "manifest.csv"
    text = manifest.read_text()
    assert main(["segment", "--manifest", str(manifest), "-o", str(manifest)]) == 2
    assert manifest.read_text() == text
    capsys.readouterr()
    project = tmp_path / "P.hemalens"
    assert main(["segment", str(tif), "-o", str(project), "--json"]) == 0
    capsys.readouterr()
    assert main(["export", str(project), str(project)]) == 2  # the project is no CSV target
    assert "is the project itself" in capsys.readouterr().err
    assert main(["export", str(project), str(project / "cells.h5")]) == 2
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    assert main(["export", str(project), str(other)]) == 2
    assert "not a HemaLens export; use --force" in capsys.readouterr().err
    assert other.read_text() == "my notes\n"
    out = tmp_path / "cells.csv"
    assert main(["export", str(project), str(out)]) == 0
    assert main(["export", str(project), str(out)]) == 0  # an earlier export is replaced
    assert main(["export", str(project), str(other), "--force"]) == 0
    assert other.read_text().startswith("cell_id,")


def test_awkward_paths_fail_per_input_in_one_line(sim, tmp_path, capsys):
    """A symlink loop and a file name that is not UTF-8 in one batch; the good input
    still imports; a 240-character project name fits; an output folder option naming a
    file is refused before any work."""
    import os

    from hemalens.engine.cli import main
    from hemalens.engine.project import Project

    tif = sorted((sim / "sim").glob("*.tif"))[0]
    loop = tmp_path / "loop.tif"
    loop.symlink_to(loop)
    odd = tmp_path / os.fsdecode(b"caf\xe9-latin1.tif")  # not UTF-8
    odd.write_bytes(tif.read_bytes())
    out = tmp_path / ("n" * 240 + ".hemalens")
    code = main(["segment", str(tif), str(loop), str(odd), "--modality", "phase",
                 "-o", str(out), "--json"])
    err = capsys.readouterr().err
    assert code == 1  # some inputs failed, the project was still written
    failed = [line for line in err.splitlines() if line.startswith("hemalens: failed:")]
    assert len(failed) == 1 and "loop.tif" in failed[0]
    with Project.open(out) as p:
        assert p.inputs["status"].tolist() == ["ok", "failed", "ok"]
        assert "caf\ufffd-latin1.tif" in p.inputs["file"][2]  # stored readable
    report = tmp_path / "report.html"
    report.write_text("keep me")
    assert main(["review", str(out), "--report", str(report)]) == 2
    assert "--report needs a folder" in capsys.readouterr().err
    assert report.read_text() == "keep me"
    assert main(["explain", str(out), "--method", "saliency", "--png", str(report)]) == 2
    assert report.read_text() == "keep me"


def test_a_read_only_output_folder_is_one_line(sim, tmp_path, capsys, monkeypatch):
    import errno

    from hemalens.engine.cli import main
    from hemalens.engine.project import store

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store.Path, "mkdir", read_only)  # as on a read-only mount
    tif = sorted((sim / "sim").glob("*.tif"))[0]
    assert main(["segment", str(tif), "-o", str(tmp_path / "P.hemalens")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file system is read-only" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_an_input_too_large_for_memory_fails_alone(sim, tmp_path, capsys, monkeypatch):
    """MemoryError in one input (an oversized frame) is that input's one-line failure;
    the batch's good inputs are still imported."""
    from hemalens.engine import ingest
    from hemalens.engine.cli import main
    from hemalens.engine.project import Project

    tifs = sorted((sim / "sim").glob("*.tif"))[:2]
    real = ingest.phase_block

    def greedy(source, *args, **kwargs):
        # the first input's frames do not fit (chunks run in threads: go by the input)
        if Path(source.spec.path).name == tifs[0].name:
            raise MemoryError("Unable to allocate 37.3 GiB for an array")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ingest, "phase_block", greedy)
    out = tmp_path / "P.hemalens"
    code = main(["segment", *map(str, tifs), "--modality", "phase", "-o", str(out), "--json"])
    err = capsys.readouterr().err
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("hemalens: failed:")]
    assert len(failed) == 1 and tifs[0].name in failed[0] and "not enough memory" in failed[0]
    with Project.open(out) as p:
        assert p.inputs["status"].tolist() == ["failed", "ok"]
        assert p.n_cells > 0


@pytest.mark.parametrize("forced", ["rgb", "hologram"])
def test_a_forced_modality_that_contradicts_the_content_is_warned(sim, tmp_path, capsys,
                                                                 forced):
    from hemalens.engine.cli import main

    tif = sorted((sim / "sim").glob("*.tif"))[0]
    out = tmp_path / "P.hemalens"
    main(["segment", str(tif), "--modality", forced, "--pixel-size", "0.3",
          "--wavelength", "528", "-o", str(out), "--json"])
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("hemalens: warning:")]
    assert len(warned) == 1, err
    assert tif.name in warned[0] and f"--modality {forced}" in warned[0] and "phase" in warned[0]
    # the right modality says nothing
    main(["segment", str(tif), "--modality", "phase", "-o", str(tmp_path / "Q.hemalens"),
          "--json"])
    assert "warning" not in capsys.readouterr().err
