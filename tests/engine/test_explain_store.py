"""Explanation cache in the project: round trip, merge, segments, invalidation, atomicity."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import tree_digest

from hemalens.engine.errors import ProjectError
from hemalens.engine.explain.store import (
    cached_cells,
    drop_explanations,
    read_explanations,
    write_explanations,
)
from hemalens.engine.project.store import Project, ProjectWriter

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]
N, S = 20, 8
STAMP = "2024-01-01T00:00:00.000+00:00"
SETTINGS = {"seed": 0}


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "p.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
        w.add_input({"file": "a.tif"})
        w.append({"input_id": np.zeros(N, int), "given_label": rng.integers(0, 4, N)},
                 rng.random((N, S, S)))
    return path


def _maps(n, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=(n, S, S))).astype(np.float32)


CACHE = "derived/explanations/lenet5/lime"


def _write(project, ids, maps, targets=None, *, stamp=STAMP, settings=SETTINGS, method="lime"):
    targets = np.zeros(len(ids), int) if targets is None else targets
    write_explanations(project, "lenet5", method, ids, maps, targets, model_created=stamp,
                       settings=settings)


def test_nothing_cached(project):
    maps, tgt, comp = read_explanations(project, "lenet5", "lime", [0, 3])
    assert maps.shape == (2, S, S) and np.isnan(maps).all()
    assert tgt.tolist() == [-1, -1] and not comp.any()
    assert cached_cells(project, "lenet5", "lime", STAMP).size == 0
    assert drop_explanations(project) == 0


def test_round_trip_any_magnitude(project):
    ids = np.array([7, 2, 3, 4, 15])
    maps = _maps(5)
    maps[1] *= 1e-7  # raw gradients: float16 alone would flush these to zero
    maps[2] *= 1e5  # beyond float16's range
    maps[3] = 0.0
    _write(project, ids, maps, [1, 0, 2, 3, 1])
    got, tgt, comp = read_explanations(project, "lenet5", "lime", ids, model_created=STAMP)
    assert got.dtype == np.float32 and comp.all()
    assert tgt.tolist() == [1, 0, 2, 3, 1]
    for g, m in zip(got, maps, strict=True):  # float16 relative to each cell's max |map|
        np.testing.assert_allclose(g, m, rtol=0, atol=np.abs(m).max() * 2**-11 + 1e-30)
    everything, tgt_all, comp_all = read_explanations(project, "lenet5", "lime")
    assert everything.shape == (N, S, S)
    assert np.flatnonzero(comp_all).tolist() == [2, 3, 4, 7, 15]
    assert np.isnan(everything[~comp_all]).all() and (tgt_all[~comp_all] == -1).all()
    # repeated and unordered ids
    again, _, c2 = read_explanations(project, "lenet5", "lime", [15, 0, 15])
    assert c2.tolist() == [True, False, True]
    np.testing.assert_array_equal(again[0], again[2])
    assert np.isnan(again[1]).all()
    with Project.open(project) as p:  # an open Project works too
        assert cached_cells(p, "lenet5", "lime", STAMP).tolist() == [2, 3, 4, 7, 15]
    segs = sorted((project / CACHE).iterdir())
    assert [q.name for q in segs] == ["seg-000001.h5"]
    with h5py.File(segs[0], "r") as g:  # plain HDF5 layout: the cells written, nothing more
        assert g["cell_id"][()].tolist() == [2, 3, 4, 7, 15]
        assert g["maps"].dtype == np.float16 and g["maps"].shape == (5, S, S)
        assert g["maps"].chunks == (1, S, S)
        assert g["target"].dtype == np.int16 and g["scale"].dtype == np.float32
        assert g.attrs["model_created"] == STAMP and g.attrs["settings_json"] == '{"seed": 0}'
        assert g.attrs["created"] and list(g.attrs["map_shape"]) == [S, S]


def test_merge_of_two_partial_writes(project):
    a, b = _maps(4, 1), _maps(3, 2)
    _write(project, [0, 1, 2, 3], a, [0, 0, 1, 1])
    _write(project, [3, 10, 11], b, [2, 2, 2])  # cell 3 is recomputed
    assert cached_cells(project, "lenet5", "lime", STAMP).tolist() == [0, 1, 2, 3, 10, 11]
    got, tgt, _ = read_explanations(project, "lenet5", "lime", [0, 1, 2, 3, 10, 11])
    want = np.concatenate([a[:3], b])
    np.testing.assert_allclose(got, want, atol=np.abs(want).max() * 2**-11)
    assert tgt.tolist() == [0, 0, 1, 2, 2, 2]
    _write(project, [5], _maps(1, 3), method="gradcam")  # methods are separate caches
    assert cached_cells(project, "lenet5", "gradcam", STAMP).tolist() == [5]
    assert cached_cells(project, "lenet5", "lime", STAMP).size == 6


def test_invalidation_when_the_model_or_settings_change(project):
    _write(project, [0, 1, 2], _maps(3))
    new = "2024-02-01T00:00:00.000+00:00"
    # readers with the new stamp see nothing; without a stamp they see the stored cache
    assert cached_cells(project, "lenet5", "lime", new).size == 0
    _, _, comp = read_explanations(project, "lenet5", "lime", [0, 1], model_created=new)
    assert not comp.any()
    assert read_explanations(project, "lenet5", "lime", [0])[2].all()
    assert cached_cells(project, "lenet5", "lime", STAMP, settings={"seed": 1}).size == 0
    # a write by the retrained model drops the old rows
    _write(project, [5], _maps(1, 4), stamp=new)
    assert cached_cells(project, "lenet5", "lime", new).tolist() == [5]
    assert cached_cells(project, "lenet5", "lime", STAMP).size == 0
    # so do other settings, and another map size
    _write(project, [6], _maps(1, 5), stamp=new, settings={"seed": 1})
    assert cached_cells(project, "lenet5", "lime", new).tolist() == [6]
    write_explanations(project, "lenet5", "lime", [7], np.ones((1, 4, 4)), [0],
                       model_created=new, settings={"seed": 1})
    maps, _, comp = read_explanations(project, "lenet5", "lime", [6, 7])
    assert comp.tolist() == [False, True] and maps.shape == (2, 4, 4)


def test_failure_mid_write_leaves_the_cache_unchanged(project, monkeypatch):
    _write(project, [0, 1], _maps(2))
    before = tree_digest(project)
    real = h5py.Group.create_dataset

    def half_then_fail(self, name, *args, **kwargs):
        if name == "target":  # maps and scales are in the temporary file already
            raise OSError(28, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", half_then_fail)
    with pytest.raises(ProjectError, match="no space left on device; the cache is unchanged"):
        _write(project, [1, 2, 3], _maps(3, 9))
    monkeypatch.undo()
    assert tree_digest(project) == before
    assert [q.name for q in (project / CACHE).iterdir()] == ["seg-000001.h5"]
    assert cached_cells(project, "lenet5", "lime", STAMP).tolist() == [0, 1]


def test_many_small_writes_merge_into_few_segments_and_newest_wins(project):
    """Every write appends (no copy of what is stored); four segments of a size class merge."""
    rng = np.random.default_rng(5)
    want = {}
    for k in range(40):
        ids = np.sort(rng.choice(N, size=3, replace=False))
        maps = _maps(3, seed=100 + k)
        _write(project, ids, maps, [k % 4] * 3)
        for i, m in zip(ids, maps, strict=True):
            want[int(i)] = (m, k % 4)
        segs = sorted((project / CACHE).iterdir())
        assert len(segs) <= 8, [q.name for q in segs]  # at most 3 per size class
    ids = np.array(sorted(want))
    got, tgt, comp = read_explanations(project, "lenet5", "lime", ids, model_created=STAMP)
    assert comp.all()
    for g, i, t in zip(got, ids, tgt, strict=True):
        m, target = want[int(i)]
        np.testing.assert_allclose(g, m, atol=np.abs(m).max() * 2**-11)
        assert t == target


def test_drop(project):
    _write(project, [0], _maps(1))
    _write(project, [1], _maps(1), method="gradcam")
    write_explanations(project, "alexnet", "lime", [2], _maps(1), [0], model_created=STAMP)
    assert drop_explanations(project, "lenet5", "gradcam") == 1
    assert drop_explanations(project, "lenet5") == 1
    assert cached_cells(project, "alexnet", "lime", STAMP).tolist() == [2]
    assert drop_explanations(project) == 1
    assert list((project / "derived/explanations").iterdir()) == []


def test_bad_inputs(project, tmp_path):
    with pytest.raises(ValueError, match="no cell with id 20"):
        _write(project, [0, 20], _maps(2))
    with pytest.raises(ValueError, match="duplicates"):
        _write(project, [1, 1], _maps(2))
    with pytest.raises(ValueError, match="3 cell_ids for 2 maps"):
        _write(project, [0, 1, 2], _maps(2), [0, 0])
    nan = _maps(2)
    nan[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 cell"):
        _write(project, [0, 1], nan)
    with pytest.raises(ValueError, match="model_created"):
        _write(project, [0], _maps(1), stamp="")
    with pytest.raises(ValueError, match="invalid method name"):
        _write(project, [0], _maps(1), method="a/b")
    with pytest.raises(ValueError, match="JSON"):
        _write(project, [0], _maps(1), settings={"f": object()})
    with pytest.raises(ValueError, match="targets"):
        _write(project, [0], _maps(1), targets=[0.5])
    assert list((project / "derived/explanations").iterdir()) == []  # nothing was written
    other = tmp_path / "notes.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    for call in (lambda: _write(other, [0], _maps(1)),
                 lambda: read_explanations(other, "lenet5", "lime"),
                 lambda: cached_cells(other, "lenet5", "lime", STAMP),
                 lambda: drop_explanations(other)):
        with pytest.raises(ProjectError, match="notes.h5") as err:
            call()
        assert "\n" not in str(err.value)
