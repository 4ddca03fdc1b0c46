"""The embedding view's engine helpers: neighbourhood change, the intervention preview, expand."""

from __future__ import annotations

import numpy as np
import pytest

from hemalens.engine.embed.pli import PLIEdit
from hemalens.engine.embed.view import intervention_preview, neighbourhood_changed
from hemalens.engine.jobs import CallbackProgress, Cancelled


def clusters(n_per=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [4, 0], [0, 4]], float)[:k]
    y = np.repeat(np.arange(k), n_per)
    xy = centres[y] + rng.normal(0, 1.5, (y.size, 2))
    groups = np.tile(np.arange(6), y.size // 6 + 1)[:y.size]
    return xy, y, groups


def test_neighbourhood_changed_counts_cells_whose_neighbours_moved():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5))
    assert not neighbourhood_changed(a, a * 3 + 1).any()  # a similarity keeps every neighbour
    shuffled = a[rng.permutation(300)]
    assert neighbourhood_changed(a, shuffled).mean() > 0.9
    b = a.copy()
    b[:10] += 100  # ten cells leave (their neighbours change; everyone else keeps theirs)
    changed = neighbourhood_changed(a, b)
    assert changed[:10].all() and changed[10:].mean() < 0.35


class Recorder(CallbackProgress):
    def __init__(self, stop_after=None):
        super().__init__()
        self.records, self.stop_after = [], stop_after

    def report(self, record):
        self.records.append(record)
        if self.stop_after is not None and len(self.records) >= self.stop_after:
            self.cancel()


def test_preview_reports_every_iteration_and_contraction_tightens_classes():
    xy, y, groups = clusters()
    rec = Recorder()
    out = intervention_preview(xy, y, groups, ("c",), lambda_c=0.5, iterations=6,
                               progress=rec)
    assert [r["iteration"] for r in rec.records] == list(range(7))
    assert len(out["f1"]) == 7 and all(0 <= f <= 1 for f in out["f1"])
    assert out["region_folds"]

    def spread(p):
        return np.mean([p[y == c].std(axis=0).mean() for c in range(3)])

    assert spread(out["points"]) < 0.5 * spread(xy)
    assert out["f1"][-1] >= out["f1"][0]


def test_preview_stops_when_cancelled_and_falls_back_to_cell_folds():
    xy, y, _ = clusters()
    rec = Recorder(stop_after=3)
    with pytest.raises(Cancelled):
        intervention_preview(xy, y, np.zeros(y.size), ("c", "s"), iterations=50, progress=rec)
    assert len(rec.records) == 3


def test_contract_edit_with_a_negative_factor_expands():
    pts = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0]])
    new = PLIEdit([0, 1, 2], "contract", factor=-1.0).apply(pts)
    c = pts.mean(axis=0)
    assert np.allclose(new - c, 2 * (pts - c))
    with pytest.raises(ValueError, match="factor"):
        PLIEdit([1], "contract", factor=-3.5)


def test_with_edits_leaves_the_original_session_alone():
    from hemalens.engine.embed.pli import PLISession

    s = PLISession(np.zeros((4, 2)), [10, 11, 12, 13])
    s.add(PLIEdit([10], "shift", vector=(1, 0)))
    t = s.with_edits([PLIEdit([11, 12], "shift", vector=(0, 2))])
    assert len(s.edits) == 1 and s.targets()[1].tolist() == [True, False, False, False]
    assert t.targets()[1].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="not in the map"):
        s.with_edits([PLIEdit([99], "shift", vector=(1, 0))])
