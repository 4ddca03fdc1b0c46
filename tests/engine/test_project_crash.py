"""kill -9 at random moments: no acknowledged edit is lost, the project always opens.

Each trial forks a writer (from ``tests/crash_workers.py``, a fork server that has
already imported HemaLens, so a trial costs milliseconds, not an interpreter start),
lets it run for a random time and kills it with SIGKILL; then the project must open,
every edit the writer acknowledged (written to an ack file after the call returned) must
be there, and derived data is either the old or the new version, whole. The trial counts
are the module constants.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hemalens.engine.project import Project, ProjectWriter
from hemalens.engine.review.predictions import read_predictions, write_predictions

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork")

EDIT_TRIALS = 50
WRITE_TRIALS = 15
N, S = 200, 8


class ForkServer:
    """Client of ``crash_workers.serve``: start writers by fork, kill them, reap them."""

    def __init__(self) -> None:
        worker = Path(__file__).resolve().parents[1] / "crash_workers.py"
        self.proc = subprocess.Popen([sys.executable, str(worker)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def run_and_kill(self, loop: str, args: list, ack: Path, rng, longest: float) -> list[str]:
        """Fork ``loop`` (it appends acks to ``ack``), SIGKILL it at a random moment."""
        ack.write_text("")
        pid = int(self.ask(" ".join([loop, str(args[0]), str(ack), *map(str, args[1:])])))
        deadline = time.monotonic() + 20
        while not ack.read_text() and time.monotonic() < deadline:
            time.sleep(0.001)  # the first acknowledged write
        time.sleep(rng.uniform(0.0, longest))
        os.kill(pid, signal.SIGKILL)
        assert self.ask(f"reap {pid}") == "reaped"
        text = ack.read_text()
        lines = text.split("\n")[:-1]  # a line cut by the kill (no newline) was not acked
        return [line for line in lines if line.strip()]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


def _project(path: Path) -> Path:
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S),
                       classes=["a", "b", "c"]) as w:
        w.append({"original_label": np.zeros(N, int)}, np.zeros((N, S, S), np.float32))
    return path


def test_kill_9_while_editing_loses_no_acknowledged_edit(tmp_path, server):
    path = _project(tmp_path / "p.hemalens")
    rng = np.random.default_rng(0)
    total_acked = 0
    for trial in range(EDIT_TRIALS):
        acks = server.run_and_kill("edit", [path], tmp_path / f"ack{trial}", rng, 0.05)
        acked = [int(a) for _, a in (line.split() for line in acks) if a != "None"]
        total_acked += len(acked)
        with Project.open(path) as p:  # opens, whatever the moment of the kill
            store = p.annotations
            actions = {int(r[0]) for r in store._read("SELECT id FROM actions")}
            assert set(acked) <= actions  # every acknowledged edit is there
            # and the current labels agree with the history's newest row per cell
            h = store.history()
            lab = h["field"] == "label"
            newest = dict(zip(h["cell_id"][lab].tolist(), h["new"][lab].tolist(), strict=True))
            labels = p.cells["given_label"]
            assert all(labels[c] == v for c, v in newest.items())
    assert total_acked > EDIT_TRIALS  # the kills landed mid-stream


def test_kill_9_while_writing_predictions_leaves_a_whole_version(tmp_path, server):
    path = _project(tmp_path / "p.hemalens")
    write_predictions(path, "m", {"predicted": np.zeros(N, np.int16),
                                  "confidence": np.zeros(N, np.float32),
                                  "probs": np.zeros((N, 50), np.float32)}, {"version": 0})
    rng = np.random.default_rng(1)
    for trial in range(WRITE_TRIALS):
        acks = server.run_and_kill("predict", [path, N], tmp_path / f"ack{trial}", rng, 0.1)
        cols, attrs = read_predictions(path, "m")
        k = attrs["version"]
        assert k >= int(acks[-1])  # an acknowledged write is never lost
        # whole: every column belongs to the same version
        assert (cols["predicted"] == k).all() and (cols["probs"] == k).all()
        np.testing.assert_array_equal(cols["confidence"], np.float32(k / 1000))
    with Project.open(path, "r+"):  # a writer's open removes the dead writers' temp files
        pass
    assert [q.name for q in (path / "derived/predictions").iterdir()] == ["m.h5"]


def test_kill_9_while_writing_explanations_keeps_every_acknowledged_map(tmp_path, server):
    from hemalens.engine.explain.store import read_explanations

    path = _project(tmp_path / "p.hemalens")
    rng = np.random.default_rng(2)
    for trial in range(WRITE_TRIALS):
        acks = server.run_and_kill("explain", [path], tmp_path / f"ack{trial}", rng, 0.15)
        maps, _, computed = read_explanations(path, "m", "lime", model_created="t")
        for k in (int(a) for a in acks[-8:]):  # later writes may overwrite earlier cells
            ids = np.arange(k * 5, k * 5 + 5) % 200
            assert computed[ids].all()
            assert (maps[ids] >= k + 1 - 1e-3).all()  # this write's map or a newer one


def test_kill_9_during_migration_leaves_the_file_or_the_folder(tmp_path, server):
    """Kill the migration of a version-1 file at random moments: it always opens after."""
    import shutil

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "v1-project.h5"
    rng = np.random.default_rng(3)
    outcomes = {"file": 0, "folder": 0, "swapping": 0}
    for trial in range(WRITE_TRIALS):
        path = tmp_path / f"t{trial}.h5"
        shutil.copyfile(fixture, path)
        pid = int(server.ask(f"migrate {path}"))
        time.sleep(rng.uniform(0.0, 0.4))  # the migration takes ~0.1-0.3 s
        os.kill(pid, signal.SIGKILL)
        assert server.ask(f"reap {pid}") == "reaped"
        kind = "folder" if path.is_dir() else "file" if path.is_file() else "swapping"
        outcomes[kind] += 1
        with Project.open(path) as p:  # rolls back or finishes, then (re)migrates
            assert p.n_cells == 30 and p.history_rows == 4
            assert p.cells["given_label"][[1, 2, 3, 26]].tolist() == [2, 3, 2, 1]
        leftovers = [q.name for q in tmp_path.iterdir() if q.name.startswith(".hl-")]
        assert leftovers == [], leftovers
    assert sum(outcomes.values()) == WRITE_TRIALS
