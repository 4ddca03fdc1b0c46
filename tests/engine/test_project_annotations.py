"""The annotation store: transactions, append-only history, undo/redo, faults."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import DECISIONS, Project, ProjectWriter, relabel

S = 8
CLASSES = ["lymphocyte", "monocyte", "neutrophil"]


def make_project(path: Path, n: int = 40) -> Path:
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
        iid = w.add_input({"file": "a.tif", "run": "r1"})
        labels = np.arange(n) % 3
        labels[-5:] = -1
        w.append({"input_id": np.full(n, iid), "original_label": labels},
                 np.zeros((n, S, S), np.float32))
    return path


@pytest.fixture()
def project(tmp_path) -> Path:
    return make_project(tmp_path / "p.hemalens")


@pytest.fixture()
def store(project):
    with Project.open(project, "r+") as p:
        yield p.annotations


def test_current_labels_are_the_original_plus_edits(store):
    original = store.current_labels().copy()
    r = store.apply("relabel", [0, 1, 2], user="ann", label_name="monocyte",
                    decision="relabelled")
    assert r.cell_ids.tolist() == [0, 1, 2]  # cell 1 was a monocyte already: confirmed
    assert r.labels.tolist() == [1, 1, 1] and r.decisions.tolist() == [2, 1, 2]
    labels = store.current_labels()
    assert labels[[0, 1, 2]].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(labels[3:], original[3:])
    dec = store.current_decisions()
    assert [DECISIONS[d] for d in dec[:3]] == ["relabelled", "confirmed", "relabelled"]


def test_history_is_append_only_and_undo_is_a_new_row(store):
    store.apply("relabel", [5], user="ann", label_name="lymphocyte", decision="relabelled",
                reason="queue")
    rows_before = store.history()
    r = store.undo("ann", reason="oops")
    assert r.op == "undo" and r.target == 1 and r.cell_ids.tolist() == [5]
    rows = store.history()
    n = rows_before["change"].size
    for key in rows_before:  # the old rows are untouched
        np.testing.assert_array_equal(rows[key][:n], rows_before[key])
    assert rows["op"][n:].tolist() == ["undo", "undo"]  # label and decision
    assert store.current_labels()[5] == 2 % 3  # back to the original (5 % 3 = 2)
    r = store.redo("ann")
    assert r.op == "redo" and store.current_labels()[5] == 0
    assert store.current_decisions()[5] == DECISIONS.index("relabelled")
    assert store.label_history_rows() == 3  # edit, undo, redo


def test_undo_and_redo_stacks_are_per_user_and_a_new_edit_clears_redo(store):
    a1 = store.apply("exclude", [1], user="ann", decision="excluded").action
    b1 = store.apply("unsure", [2], user="bob", decision="unsure").action
    assert store.undo_stack("ann") == [a1] and store.undo_stack("bob") == [b1]
    store.undo("ann")
    assert store.current_decisions()[1] == 0 and store.current_decisions()[2] == 4
    assert store.redo_stack("ann") == [a1]
    store.apply("confirm", [3], user="ann", decision="confirmed")
    assert store.redo_stack("ann") == []  # a new edit ends the redo chain
    assert store.redo("ann").action is None
    assert store.undo("carol").action is None  # nothing of hers to undo


def test_undo_keeps_a_newer_edit_of_another_user(store):
    store.apply("relabel", [7, 8], user="ann", label_name="lymphocyte", decision="relabelled")
    store.apply("relabel", [8], user="bob", label_name="neutrophil", decision="relabelled")
    r = store.undo("ann")
    assert r.skipped == 1  # cell 8 was changed since by bob: his label stays
    labels = store.current_labels()
    assert labels[7] == 7 % 3 and labels[8] == 2


def test_a_new_class_is_added_in_the_same_transaction(store):
    r = store.apply("relabel", [0], user="ann", label_name="blast", decision="relabelled")
    assert r.new_classes == ["blast"] and store.classes() == [*CLASSES, "blast"]
    assert store.current_labels()[0] == 3
    assert store.ensure_class("blast") == 3 and store.ensure_class("plasma") == 4


def test_bad_edits_write_nothing(store):
    last = store.last_change()
    with pytest.raises(ValueError, match="unknown cell ids"):
        store.apply("relabel", [0, 999], user="ann", labels=1)
    with pytest.raises(ValueError, match="label codes outside"):
        store.apply("relabel", [0], user="ann", labels=7)
    with pytest.raises(ValueError, match="user"):
        store.apply("exclude", [0], user=" ", decision="excluded")
    with pytest.raises(ValueError, match="unknown edit"):
        store.apply("delete", [0], user="ann")
    assert store.last_change() == last


def test_relabel_function_returns_the_cells_changed(project):
    assert relabel(project, [0, 1, 2], "monocyte", user="ann") == 2
    assert relabel(project, [0, 1, 2], "monocyte", user="ann") == 0
    assert relabel(project, [35], None, user="ann") == 0  # already unlabelled
    with Project.open(project) as p:
        assert p.cells["given_label"][:3].tolist() == [1, 1, 1]
        assert p.history_rows == 2


def test_the_plain_tables_give_the_final_labels_without_hemalens(project):
    relabel(project, [4], "neutrophil", user="ann", reason="r")
    conn = sqlite3.connect(project / "annotations.sqlite")
    assert conn.execute("SELECT cell_id, label FROM current_labels").fetchall() == [
        (4, "neutrophil")]
    row = conn.execute("SELECT cell_id, old, new, user, reason FROM label_history").fetchone()
    assert row == (4, "monocyte", "neutrophil", "ann", "r")
    conn.close()


def test_disk_full_during_an_edit_loses_nothing(project):
    """SQLite's page limit stands in for a full disk (a real one: the slow tmpfs test)."""
    relabel(project, [0], "monocyte", user="ann")
    with Project.open(project, "r+") as p:
        store = p.annotations
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(ProjectError, match="no space left on device; the edit was not saved"):
            store.apply("relabel", np.arange(35), user="ann", label_name="a-new-class-" + "x" * 50,
                        decision="relabelled", reason="y" * 5000)
        assert store.current_labels()[0] == 1
    with Project.open(project) as p:
        assert p.cells["given_label"][0] == 1 and p.history_rows == 1
        assert p.classes == CLASSES


def test_a_corrupt_annotation_database_is_named_in_one_line(project):
    (project / "annotations.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProjectError) as info:
        Project.open(project)
    assert "annotations.sqlite" in str(info.value) and "\n" not in str(info.value)


def test_a_foreign_database_is_refused(project, tmp_path):
    other = make_project(tmp_path / "other.hemalens")
    (project / "annotations.sqlite").write_bytes((other / "annotations.sqlite").read_bytes())
    with pytest.raises(ProjectError, match="belongs to another project"):
        Project.open(project)
    conn = sqlite3.connect(project / "annotations.sqlite")
    conn.execute("UPDATE meta SET value = 'something-else' WHERE key = 'format'")
    conn.commit()
    conn.close()
    with pytest.raises(ProjectError, match="not a HemaLens annotation database"):
        Project.open(project)


def test_a_read_only_project_opens_and_refuses_edits(project, monkeypatch):
    import hemalens.engine.project.annotations as ann

    relabel(project, [0], "monocyte", user="ann")
    monkeypatch.setattr(ann, "_writable", lambda path: False)  # as for a read-only folder
    with Project.open(project, "r+") as p:
        assert p.read_only and p.cells["given_label"][0] == 1
        with pytest.raises(ProjectError, match="read-only"):
            p.annotations.apply("exclude", [1], user="ann", decision="excluded")


_EDITOR = textwrap.dedent("""
    import sys
    from hemalens.engine.project import relabel
    path, user, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):  # a new class each time: every call changes something
        relabel(path, [i % 30], f"{user}-{i}", user=user, reason=str(i))
""")


def test_two_processes_editing_at_once_lose_nothing(project):
    """The fault the hardening issue found: 415 of 900 rows lost. Now: every row is kept."""
    procs = [subprocess.Popen([sys.executable, "-c", _EDITOR, str(project), user, "60"])
             for user in ("ann", "bob")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Project.open(project) as p:
        h = p.annotations.history()
        acts = p.annotations._read("SELECT user, COUNT(*) FROM actions GROUP BY user")
    assert dict(acts) == {"ann": 60, "bob": 60}  # every call recorded its action
    for u in ("ann", "bob"):
        mine = (h["user"] == u) & (h["field"] == "label")
        assert sorted(int(r) for r in h["reason"][mine]) == list(range(60))
        assert {f"{u}-{i}" for i in range(60)} <= set(p_classes := _classes(project))
    assert len(p_classes) == len(CLASSES) + 120  # both writers' new classes, none lost


def _classes(project):
    with Project.open(project) as p:
        return list(p.classes)
