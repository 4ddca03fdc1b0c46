"""Train / val / test splits: disjoint, covering, stratified within +-1, donor held out."""

from __future__ import annotations

import numpy as np
import pytest

from hemalens.engine.train import check_split, make_split

FRACTIONS = (0.7, 0.2, 0.1)


def _labels(counts, seed=0) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


def _assert_partition(split, n):
    parts = [split[k] for k in ("train", "val", "test")]
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    allidx = np.concatenate(parts)
    assert allidx.size == n and np.array_equal(np.sort(allidx), np.arange(n))  # disjoint+cover


@pytest.mark.parametrize("counts", [(100, 100, 100, 100), (250, 37, 10, 3), (11, 29, 58, 1000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_within_one_cell_per_class(counts, seed):
    y = _labels(counts, seed)
    split = make_split(y, seed=seed)
    _assert_partition(split, y.size)
    for part, frac in zip(("train", "val", "test"), FRACTIONS, strict=True):
        got = np.bincount(y[split[part]], minlength=len(counts))
        exact = np.array(counts) * frac
        big = np.array(counts) * min(FRACTIONS) >= 1  # tiny classes: one cell per split first
        assert np.all(np.abs(got - exact)[big] <= 1), (part, got, exact)
        assert np.all(got >= 1)  # every class in every split


def test_split_is_seeded():
    y = _labels((50, 60, 70, 80))
    a, b = make_split(y, seed=3), make_split(y, seed=3)
    c = make_split(y, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_other_fractions():
    y = _labels((200, 200))
    split = make_split(y, seed=0, fractions=(0.5, 0.25, 0.25))
    assert [split[k].size for k in ("train", "val", "test")] == [200, 100, 100]
    split = make_split(y, seed=0, fractions=(0.8, 0.2, 0.0))  # no test set
    assert split["test"].size == 0 and split["val"].size == 80
    _assert_partition(split, 400)


def test_donor_held_out_really_held_out():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 4, n)
    donors = rng.choice(np.array(["donor1", "donor2", "donor3"]), n)
    split = make_split(y, seed=0, donors=donors, test_donor="donor2")
    _assert_partition(split, n)
    np.testing.assert_array_equal(split["test"], np.flatnonzero(donors == "donor2"))
    assert not np.any(donors[split["train"]] == "donor2")
    assert not np.any(donors[split["val"]] == "donor2")
    rest = donors != "donor2"
    for c in range(4):  # train/val stratified 70:20 over the other donors
        n_c = np.count_nonzero(rest & (y == c))
        assert abs(np.count_nonzero(y[split["val"]] == c) - n_c * 2 / 9) <= 1
    # donors are ignored without a test donor
    plain = make_split(y, seed=0, donors=donors)
    assert np.any(donors[plain["train"]] == "donor2")


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.array([], int), {}, "no labelled cells"),
        (np.array([0, 0, 0, 1, 1]), {}, "class 1 has only 2 cell\\(s\\)"),
        (np.array([0, 1, -1]), {}, "labels must be >= 0"),
        (np.array([0.0, 1.0]), {}, "integer class codes"),
        (np.zeros((3, 2), int), {}, "1-D"),
        (np.zeros(9, int), {"fractions": (0.5, 0.5, 0.5)}, "sum to 1"),
        (np.zeros(9, int), {"fractions": (0.9, 0.0, 0.1)}, "must be > 0"),
        (np.zeros(9, int), {"fractions": (0.9, 0.1)}, "three numbers"),
        (np.zeros(9, int), {"test_donor": "d1"}, "needs the donor of every cell"),
    ],
)
def test_impossible_splits_raise(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_split(labels, seed=0, **kwargs)


def test_impossible_donor_splits_raise():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    donors = np.array(["a", "a", "a", "a", "a", "a", "b", "b"])
    with pytest.raises(ValueError, match="unknown donor 'c'; donors: \\['a', 'b'\\]"):
        make_split(y, seed=0, donors=donors, test_donor="c")
    with pytest.raises(ValueError, match="classes \\[2\\] occur only in donor 'b'"):
        make_split(y, seed=0, donors=donors, test_donor="b")
    with pytest.raises(ValueError, match="holds every cell"):
        make_split(y, seed=0, donors=np.full(8, "a"), test_donor="a")
    with pytest.raises(ValueError, match="4 donors for 8 labels"):
        make_split(y, seed=0, donors=donors[:4], test_donor="a")


def test_check_split():
    ok = check_split({"train": [3, 0, 1], "val": [2]}, 5)
    np.testing.assert_array_equal(ok["train"], [0, 1, 3])
    assert ok["test"].size == 0
    with pytest.raises(ValueError, match="more than one split"):
        check_split({"train": [0, 1], "val": [1]}, 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        check_split({"train": [0, 3], "val": [1]}, 3)
    with pytest.raises(ValueError, match="repeats"):
        check_split({"train": [0, 0], "val": [1]}, 3)
    with pytest.raises(ValueError, match="no 'val' part"):
        check_split({"train": [0]}, 3)
    with pytest.raises(ValueError, match="must not be empty"):
        check_split({"train": [0], "val": []}, 3)
