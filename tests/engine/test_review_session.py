"""The Qt-free review session: filters, order, commands, queue, sign-off, other writers."""

from __future__ import annotations

import numpy as np
import pytest

from hemalens.engine.project import DECISIONS, Project, ProjectWriter, relabel
from hemalens.engine.review.predictions import write_predictions
from hemalens.engine.review.session import ReviewError, ReviewFilter, ReviewSession

S = 8
CLASSES = ["lymphocyte", "monocyte", "neutrophil"]
N = 24
UNDECIDED, CONFIRMED, RELABELLED, EXCLUDED, UNSURE = range(5)


@pytest.fixture()
def project(tmp_path):
    """Two samples: r1 labelled (curation), r2 unlabelled (a clinical sample)."""
    path = tmp_path / "p.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
        a = w.add_input({"file": "a.tif", "run": "r1"})
        b = w.add_input({"file": "b.tif", "run": "r2"})
        labels = np.where(np.arange(N) < 12, np.arange(N) % 3, -1)
        qc = np.ones(N, bool)
        qc[11] = False
        w.append({"input_id": np.where(np.arange(N) < 12, a, b), "original_label": labels,
                  "qc_pass": qc}, np.zeros((N, S, S), np.float32))
    pred = np.arange(N) % 3
    pred[0] = 1  # disputes lymphocyte, confidently
    pred[3] = 2  # disputes lymphocyte, but unsure: not a dispute
    conf = np.full(N, 0.9)
    conf[0], conf[3], conf[5], conf[14] = 0.99, 0.6, 0.3, 0.7
    std = np.full((N, 3), 0.05)
    write_predictions(path, "m", {"predicted": pred.astype(np.int16), "confidence": conf,
                                  "mc_std": std}, {"class_names": CLASSES})
    return path


@pytest.fixture()
def session(project):
    s = ReviewSession.open(project, user="tech")
    yield s
    s.close()


def test_queue_holds_disputed_then_uncertain_cells(session):
    # disputed: cell 0 (0.99 for monocyte vs lymphocyte); uncertain: 5 (0.3), 3 (0.6),
    # 14 (0.7); cell 11 failed QC
    assert session.queue.tolist() == [0, 5, 3, 14]
    assert session.disputed.nonzero()[0].tolist() == [0]  # cell 3 disputes at 60 %: no ≠
    assert session.queue_progress() == (0, 4)
    assert session.queue_progress("r2") == (0, 1)


def test_order_and_filters(session):
    vis = session.visible()
    assert vis[:3].tolist() == [5, 3, 14]  # least certain first
    assert 11 not in vis  # QC rejects hidden by default
    session.set_filter(samples=frozenset({"r2"}))
    assert set(session.visible().tolist()) == set(range(12, 24))
    session.set_filter(ReviewFilter(disputed=True))
    assert session.visible().tolist() == [0]
    session.set_filter(ReviewFilter(confidence=(0.0, 0.65)))
    assert session.visible().tolist() == [5, 3]
    session.set_filter(ReviewFilter(queue=True))
    session.set_order("queue")
    assert session.visible().tolist() == [0, 5, 3, 14]
    session.set_filter(ReviewFilter(cell_id=7))
    assert session.visible().tolist() == [7]
    session.set_filter(ReviewFilter(qc=None))
    session.set_order("class")
    groups = session.group_counts()
    assert [g[0] for g in groups] == [0, 1, 2] and sum(g[1] for g in groups) == N


def test_relabel_confirm_exclude_unsure_and_events(session, project):
    events = []
    session.subscribe(events.append)
    r = session.relabel([0], "monocyte", source="gallery")
    assert r.cell_ids.tolist() == [0] and session.labels[0] == 1
    assert session.decisions[0] == RELABELLED
    assert [e.kind for e in events][:2] == ["cells", "history"]
    assert events[0].ids.tolist() == [0] and events[0].source == "gallery"
    session.confirm([1, 12])  # 12 has no label: it takes its predicted class (lymphocyte)
    assert session.labels[12] == 0 and session.decisions[[1, 12]].tolist() == [1, 1]
    session.exclude([2])
    session.mark_unsure([4])
    assert [DECISIONS[d] for d in session.decisions[[2, 4]]] == ["excluded", "unsure"]
    with Project.open(project) as p:  # durable: another reader sees it at once
        assert p.cells["given_label"][[0, 12]].tolist() == [1, 0]
        assert p.decisions()[[0, 1, 2, 4]].tolist() == [2, 1, 3, 4]


def test_undo_redo_through_the_session(session):
    session.relabel([6, 7], "neutrophil")
    assert session.can_undo() and not session.can_redo()
    session.undo()
    assert session.labels[[6, 7]].tolist() == [0, 1] and session.can_redo()
    session.redo()
    assert session.labels[[6, 7]].tolist() == [2, 2]
    top = session.store.undo_stack("tech")[-1]
    with pytest.raises(ReviewError, match="undo history changed"):
        session.undo(expect=top + 100)


def test_edits_by_another_program_reach_the_session(session, project):
    events = []
    session.subscribe(events.append)
    relabel(project, [9], "blast", user="curator")  # another process, a new class
    changed = session.sync()
    assert changed.tolist() == [9]
    assert session.classes[-1] == "blast" and session.labels[9] == 3
    assert {e.kind for e in events} >= {"cells", "classes"}


def test_sign_off_rules_and_lock(session):
    reasons = session.signoff_blockers("r1")
    assert any("review queue are undecided" in r for r in reasons)
    with pytest.raises(ReviewError, match="cannot sign off 'r1'"):
        session.sign_off("r1")
    session.relabel([0], "monocyte")
    session.confirm([3])
    session.mark_unsure([5])
    with pytest.raises(ReviewError, match="marked unsure"):
        session.sign_off("r1")
    session.exclude([5])
    counts = session.sign_off("r1")
    assert counts["counted"] == 10 and counts["relabelled"] == 1  # 12 - QC reject - excluded
    assert counts["classes"]["monocyte"] == 5  # 4 given + cell 0
    with pytest.raises(ReviewError, match="signed off by tech"):
        session.relabel([1], "neutrophil")
    with pytest.raises(ReviewError, match="needs a reason"):
        session.reopen("r1", reason="")
    session.reopen("r1", reason="late correction")
    session.relabel([1], "neutrophil")
    assert [r["kind"] for r in session.store.signoffs("r1")] == ["signoff", "reopen"]


def test_an_unlabelled_sample_needs_every_cell_decided(session):
    reasons = session.signoff_blockers("r2")
    assert any("have no label" in r for r in reasons)
    ids = np.arange(12, 24)
    session.confirm(ids[ids != 14])
    assert any("undecided" in r for r in session.signoff_blockers("r2"))  # 14 is queued
    session.relabel([14], "monocyte")
    assert session.signoff_blockers("r2") == []
    diff = session.differential(["r2"])["r2"]
    assert diff["_total"] == 12 and diff["_changed"] == 1
    assert session.signoff_blockers("nope")[0].startswith("no sample 'nope'")


def test_differential_follows_the_review(session):
    before = session.differential()["r1"]
    assert before["_excluded"]["qc"] == 1
    session.exclude([0, 1])
    after = session.differential()["r1"]
    assert after["_total"] == before["_total"] - 2 and after["_excluded"]["excluded"] == 2


def test_a_read_only_project_gives_a_read_only_session(project):
    s = ReviewSession(Project.open(project, "r"), user="tech")
    try:
        with pytest.raises(ReviewError, match="read-only"):
            s.exclude([0])
    finally:
        s.close()


def test_cli_label_history_signoff_end_to_end(project):
    from hemalens.engine.cli import main

    assert main(["label", str(project), "--cells", "0", "--set", "monocyte", "--user", "ann",
                 "--reason", "queue"]) == 0
    assert main(["label", str(project), "--undo", "--user", "ann"]) == 0
    assert main(["label", str(project), "--redo", "--user", "ann"]) == 0
    assert main(["label", str(project), "--cells", "3,5", "--confirm", "--user", "ann"]) == 0
    assert main(["label", str(project), "--cells", "14", "--exclude", "--user", "ann"]) == 0
    assert main(["signoff", str(project), "--sample", "r1", "--user", "ann"]) == 0
    with Project.open(project) as p:
        assert p.cells["given_label"][0] == 1
        h = p.annotations.history(0)
        assert h["op"].tolist() == ["relabel", "relabel", "undo", "undo", "redo", "redo"]
        assert set(h["user"].tolist()) == {"ann"}
        assert p.annotations.signed_samples()["r1"]["user"] == "ann"
