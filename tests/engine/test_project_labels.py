"""relabel: the one label-changing function, its history, and its atomicity."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import annotations
from hemalens.engine.project.labels import relabel
from hemalens.engine.project.store import Project, ProjectWriter

S = 8
CLASSES = ["lymphocyte", "monocyte", "neutrophil"]
# given labels of the 12 cells: -1 = none
GIVEN = np.array([0, 0, 1, 2, -1, -1, 1, 0, 2, 2, -1, 1])


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "p.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
        w.append(
            {"given_label": GIVEN, "original_label": GIVEN},
            np.random.default_rng(0).random((len(GIVEN), S, S)),
        )
    return path


def digest(path) -> str:
    """Hash of the project's data files (SQLite's -wal/-shm come and go with connections)."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and not f.name.endswith(("-wal", "-shm")):
            h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def test_relabel_writes_history_for_changed_cells_only(project):
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    # cells 0 and 7 already are lymphocytes: only 2, 3, 4 change
    n = relabel(project, [3, 0, 2, 4, 7, 3], "lymphocyte", user="ana", reason="review", when=when)
    assert n == 3
    with Project.open(project) as p:
        want = GIVEN.copy()
        want[[2, 3, 4]] = 0
        np.testing.assert_array_equal(p.cells["given_label"], want)
        np.testing.assert_array_equal(p.cells["original_label"], GIVEN)  # untouched
        h = p.history()
        assert h["cell_id"].tolist() == [2, 3, 4]
        assert h["old"].tolist() == [1, 2, -1]
        assert h["new"].tolist() == [0, 0, 0]
        assert h["user"].tolist() == ["ana"] * 3
        assert h["reason"].tolist() == ["review"] * 3
        assert h["time"].tolist() == ["2024-05-01T10:30:00.000+00:00"] * 3
        modified = datetime.fromisoformat(p.modified)
        assert modified >= datetime.fromisoformat(p.created)
        assert abs(modified - datetime.now(UTC)) < timedelta(minutes=5)  # now, not `when`
        assert p.history_rows == 3


def test_history_accumulates_across_calls_and_reopen(project):
    assert relabel(project, [5], "monocyte", user="ana") == 1
    assert relabel(project, [5, 6], None, user="ben", reason="unsure") == 2
    assert relabel(project, np.array([5]), "basophil", user="ana", reason="new class") == 1
    with Project.open(project) as p:
        assert p.classes == [*CLASSES, "basophil"]  # appended: old codes stay valid
        assert p.cells["given_label"][5] == 3 and p.cells["given_label"][6] == -1
        assert p.label_names()[[0, 5, 6]].tolist() == ["lymphocyte", "basophil", ""]
        h = p.history()
        assert h["cell_id"].tolist() == [5, 5, 6, 5]
        assert h["old"].tolist() == [-1, 1, 1, -1]
        assert h["new"].tolist() == [1, -1, -1, 3]
        assert h["user"].tolist() == ["ana", "ben", "ben", "ana"]
        assert h["reason"].tolist() == ["", "unsure", "unsure", "new class"]
        times = [datetime.fromisoformat(t) for t in h["time"]]
        assert all(t.tzinfo is not None for t in times) and times == sorted(times)
        assert abs(times[-1] - datetime.now(UTC)) < timedelta(minutes=5)


def test_no_change_of_label_is_recorded_as_a_confirmation(project):
    assert relabel(project, [0, 1, 7], "lymphocyte", user="ana") == 0
    with Project.open(project) as p:
        assert p.history_rows == 0
        assert p.decisions()[[0, 1, 7]].tolist() == [1, 1, 1]  # confirmed
    before = digest(project)
    assert relabel(project, [0, 1, 7], "lymphocyte", user="ana") == 0  # nothing new
    assert relabel(project, [], "monocyte", user="ana") == 0
    assert digest(project) == before


@pytest.mark.parametrize(
    ("ids", "label", "user", "match"),
    [
        ([1, 12], "monocyte", "ana", r"unknown cell ids \[12\]"),
        ([-1], "monocyte", "ana", r"unknown cell ids \[-1\]"),
        ([0.5], "monocyte", "ana", "must be integers"),
        ([1], "monocyte", " ", "user"),
        ([1], "", "ana", "use None"),
    ],
)
def test_bad_arguments_write_nothing(project, ids, label, user, match):
    before = digest(project)
    with pytest.raises(ValueError, match=match):
        relabel(project, ids, label, user=user)
    assert digest(project) == before
    assert [p.name for p in project.parent.iterdir()] == ["p.hemalens"]


def test_failure_mid_relabel_leaves_original(project, monkeypatch):
    """A failure inside the transaction (after the rows were written) rolls it all back."""
    real_record = annotations.AnnotationStore._record
    seen = {}

    def record_then_crash(self, conn, *args):
        seen["action"] = real_record(self, conn, *args)  # rows written in the transaction
        raise OSError("power cut")  # ... but never committed

    monkeypatch.setattr(annotations.AnnotationStore, "_record", record_then_crash)
    with pytest.raises(OSError, match="power cut"):
        relabel(project, [4, 5], "monocyte", user="ana")
    assert seen["action"] == 1
    with Project.open(project) as p:
        np.testing.assert_array_equal(p.cells["given_label"], GIVEN)
        assert p.history_rows == 0 and (p.decisions() == 0).all()


def test_not_a_project(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("hello")
    with pytest.raises(ProjectError, match="not a HemaLens project"):
        relabel(bad, [0], "a", user="ana")
    with pytest.raises(ProjectError, match="no such project"):
        relabel(tmp_path / "none.hemalens", [0], "a", user="ana")


def test_read_only_project(project, monkeypatch):
    before = digest(project)
    # stands in for a read-only folder (chmod does not stop root, who may run CI)
    monkeypatch.setattr(annotations, "_writable", lambda path: False)
    with pytest.raises(ProjectError, match="read-only"):
        relabel(project, [4], "monocyte", user="ana")
    assert digest(project) == before


def test_project_relabel_reloads(project):
    with Project.open(project) as p:
        assert p.relabel([10, 11], "neutrophil", user="ana", reason="bulk") == 2
        assert p.cells["given_label"][10] == 2 and p.cells["given_label"][11] == 2
        assert p.history()["cell_id"].tolist() == [10, 11]
        assert p.image(11).shape == (S, S)


def test_concurrent_relabels_do_not_lose_updates(project):
    errors = []

    def work(cells, label):
        try:
            for c in cells:
                relabel(project, [c], label, user=label)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=([4, 5, 10], "monocyte")),
        threading.Thread(target=work, args=([0, 1, 7], "neutrophil")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Project.open(project) as p:
        assert p.cells["given_label"][[4, 5, 10]].tolist() == [1, 1, 1]
        assert p.cells["given_label"][[0, 1, 7]].tolist() == [2, 2, 2]
        assert p.history_rows == 6
