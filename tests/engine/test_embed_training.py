"""TML / ALI / PALI embedding training with SVM evaluation (issue 5, sections 3 and 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemalens.engine.embed.folds import region_folds
from hemalens.engine.embed.network import EmbeddingSpec
from hemalens.engine.embed.training import (
    EmbedTrainConfig,
    align_2d,
    combined_loss,
    default_params,
    train_embedding,
    train_fold,
)
from hemalens.engine.jobs import Cancelled

SPEC = EmbeddingSpec("small", dim=32, input_size=32)


def easy_cells(per_class: int = 30, size: int = 32, seed: int = 0):
    """Three classes of stained-looking blobs (colour and size differ), 9 mixed regions."""
    rng = np.random.default_rng(seed)
    colours = np.array([[90, 40, 140], [40, 80, 190], [190, 60, 70]], float)
    radii = (6.0, 9.0, 7.5)
    y = np.repeat(np.arange(3), per_class)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    x = np.empty((y.size, size, size, 3), np.uint8)
    for i, c in enumerate(y):
        cy, cx = rng.normal(0, 1.5, 2)
        r = radii[c] + rng.normal(0, 0.5)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2)[..., None]
        img = np.where(inside, colours[c], [232, 218, 224]) + rng.normal(0, 8, (size, size, 3))
        x[i] = np.clip(img, 0, 255).astype(np.uint8)
    groups = np.arange(y.size) % 9  # every region holds every class
    return x, y, groups


@pytest.fixture(scope="module")
def data():
    return easy_cells()


@pytest.fixture(scope="module")
def split(data):
    _, y, groups = data
    return region_folds(y, groups, 3, seed=0)[0]


def cfg(**kw) -> EmbedTrainConfig:
    base = dict(loss="tml", epochs=3, batch_size=30, lr=3e-3, svm_every=3, patience=10,
                device="cpu", spec=SPEC, ptsne_epochs=60, ptsne_refresh_epochs=15)
    return EmbedTrainConfig(**(base | kw))


# -- configuration ---------------------------------------------------------------------
def test_defaults_follow_paper_table_i_and_alpha():
    p, it = default_params(("s", "c"), "nd")
    assert (p.types, p.lambda_c, p.lambda_s, p.neighbours, it) == (("c", "s"), 0.5, 4.0, 2, 25)
    assert p.criterion == "mean-std*mean-all" and not p.probabilistic
    p, it = default_params(("c", "s"), "2d")
    assert (p.lambda_s, p.neighbours, it, p.criterion) == (1.0, 11, 48, "mean-std")
    p, it = default_params(("c", "s", "os", "r"), "nd")
    assert (p.lambda_r, p.lambda_s, p.gamma, p.neighbours, it) == (0.32, 1.0, 0.75, 15, 15)
    assert cfg(loss="ali").resolved_params()[1] == 25
    assert cfg(loss="pali").resolved_params()[1] == 48
    assert cfg(loss="ali", iterations=3).resolved_params()[1] == 3
    assert cfg(loss="ali").resolved_alpha() == 0.8
    assert cfg(loss="pali").resolved_alpha() == 0.9
    assert cfg(loss="tml").resolved_alpha() == 0.0
    assert cfg(loss="tml").resolved_alpha(pli=True) == 0.9
    assert cfg(loss="tml", alpha=0.5).resolved_alpha() == 0.0  # nothing to weigh
    assert cfg(loss="ali", alpha=0.3).resolved_alpha() == 0.3
    assert cfg(types="s,c").types == ("c", "s")
    d = cfg(loss="ali").to_dict()
    assert d["params"]["lambda_s"] == 4.0 and d["spec"]["dim"] == 32


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"loss": "pli"}, "unknown loss"),
        ({"types": ("c", "x")}, "intervention types"),
        ({"alpha": 1.5}, "alpha"),
        ({"batch_size": 2}, "batch_size"),
        ({"mining": "random"}, "unknown mining"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        cfg(**kw)


# -- losses ----------------------------------------------------------------------------
def test_combined_loss_and_class_weights_follow_eq_1():
    g = torch.Generator().manual_seed(0)
    out, tgt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    y = torch.tensor([0, 0, 0, 1])
    w = torch.tensor([0.5, 3.0])
    l1 = (out - tgt).abs().sum(1)
    total, term = combined_loss(torch.tensor(2.0), out, tgt, y, None, 0.8)
    assert float(term) == pytest.approx(float(l1.mean()), rel=1e-6)
    assert float(total) == pytest.approx(0.2 * 2.0 + 0.8 * float(l1.mean()), rel=1e-6)
    _, term_w = combined_loss(torch.tensor(2.0), out, tgt, y, w, 0.8)
    assert float(term_w) == pytest.approx(float((l1 * w[y]).mean()), rel=1e-6)
    # a batch of one class: the weighted term is exactly w_c times the plain one
    _, t0 = combined_loss(0.0, out[:3], tgt[:3], y[:3], None, 0.5)
    _, t0w = combined_loss(0.0, out[:3], tgt[:3], y[:3], w, 0.5)
    assert float(t0w) == pytest.approx(0.5 * float(t0), rel=1e-6)
    # no rows: the term is zero
    total, term = combined_loss(torch.tensor(1.5), out[:0], tgt[:0], y[:0], None, 0.9)
    assert float(term) == 0.0 and float(total) == pytest.approx(0.15)
    # manual PLI: the mean runs over the masked rows only, class-weighted per row
    m = torch.tensor([True, False, False, True])
    o2, t2 = out[:, :2], tgt[:, :2]  # 2-D map positions
    l1_2d = (o2 - t2).abs().sum(1)
    _, tm = combined_loss(0.0, o2, t2, y, w, 0.9, m)
    assert float(tm) == pytest.approx(float((l1_2d * w[y])[m].mean()), rel=1e-6)
    _, tm0 = combined_loss(0.0, o2, t2, y, None, 0.9, torch.zeros(4, dtype=torch.bool))
    assert float(tm0) == 0.0


def test_align_2d_recovers_an_affine_map():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 2))
    a = np.array([[2.0, 0.5], [-0.3, 1.5], [4.0, -1.0]])
    np.testing.assert_allclose(align_2d(src, np.c_[src, np.ones(10)] @ a), a, atol=1e-10)
    with pytest.raises(ValueError, match=">= 3"):
        align_2d(src[:2], src[:2])


# -- training --------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["tml", "ali", "pali"])
def test_each_loss_trains_and_decreases(data, split, loss):
    x, y, _ = data
    res = train_fold(x, y, split, cfg(loss=loss))
    h = res.history
    assert len(h) == 3 and h[-1]["val_f1"] is not None
    assert h[-1]["loss"] < h[0]["loss"]
    assert res.val_f1 >= 0.6 and res.test_f1 >= 0.6  # easy colours: far above chance (1/3)
    assert res.embedding.shape == (y.size, 32) and np.isfinite(res.embedding).all()
    if loss != "tml":
        assert all(r["intervention"] > 0 for r in h)
        assert all(r["intervention_seconds"] > 0 for r in h)
    if loss == "pali":
        assert all(r["ptsne_seconds"] > 0 for r in h)
    # the kept weights reproduce the returned embedding
    np.testing.assert_allclose(res.network().embed(x[:5]), res.embedding[:5], atol=1e-5)


def test_ali_pulls_embeddings_towards_their_targets(data, split):
    x, y, _ = data
    res = train_fold(x, y, split, cfg(loss="ali", alpha=1.0, epochs=4, svm_every=4))
    term = [r["intervention"] for r in res.history]
    assert term[-1] < 0.7 * term[0], term


def test_batch_targets_apply_theta_to_the_current_embedding(data, split):
    # x'_i = θ(x_i) on the batch: the L1 term is the intervention's displacement, which
    # differs from the epoch-start targets (a real change) and trains without error
    x, y, _ = data
    a = train_fold(x, y, split, cfg(loss="ali", epochs=2, svm_every=2))
    b = train_fold(x, y, split, cfg(loss="ali", epochs=2, svm_every=2, ali_target="batch"))
    assert [r["intervention"] for r in a.history] != [r["intervention"] for r in b.history]
    assert all(np.isfinite(r["intervention"]) for r in b.history)
    with pytest.raises(ValueError, match="ali_target"):
        cfg(loss="ali", ali_target="later")


def test_class_weights_change_training(data, split):
    x, y, _ = data
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:12]]  # class 2 rare
    sub = {k: np.flatnonzero(np.isin(keep, getattr(split, k))) for k in ("train", "val", "test")}
    a = train_fold(x[keep], y[keep], sub, cfg(loss="ali", epochs=1, svm_every=1))
    b = train_fold(x[keep], y[keep], sub, cfg(loss="ali", epochs=1, svm_every=1,
                                              class_weights=True))
    assert a.history[0]["intervention"] != pytest.approx(b.history[0]["intervention"])


def test_training_is_deterministic_for_a_seed(data, split):
    x, y, _ = data
    c = cfg(loss="ali", epochs=2, svm_every=2)
    a, b = train_fold(x, y, split, c), train_fold(x, y, split, c)
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k])
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    other = train_fold(x, y, split, cfg(loss="ali", epochs=2, svm_every=2, seed=1))
    assert not np.array_equal(other.embedding, a.embedding)


class _CancelAfter:
    def __init__(self, n: int) -> None:
        self.n = n

    def set_status(self, text: str) -> None:
        pass

    def set_progress(self, done: int, total: int | None) -> None:
        pass

    def is_cancelled(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_cancel_stops_training(data, split):
    x, y, _ = data
    with pytest.raises(Cancelled):
        train_fold(x, y, split, cfg(loss="ali"), progress=_CancelAfter(3))


def test_train_embedding_gives_table_ii_shape(data):
    x, y, groups = data
    res = train_embedding(x, y, groups, cfg(epochs=1, svm_every=1), folds=3)
    assert [f["fold"] for f in res["folds"]] == [0, 1, 2]
    f1 = [f["test_f1"] for f in res["folds"]]
    assert res["mean_f1"] == pytest.approx(np.mean(f1), abs=1e-4)
    assert res["std_f1"] == pytest.approx(np.std(f1), abs=1e-4)
    assert res["best_fold"] == int(np.argmax([f["val_f1"] for f in res["folds"]]))
    # every row is tested by exactly one fold, and regions stay within one fold
    assert res["test_fold"].min() == 0 and set(res["test_fold"]) == {0, 1, 2}
    for g in np.unique(groups):
        assert np.unique(res["test_fold"][groups == g]).size == 1
    np.testing.assert_allclose(res["network"].embed(x[:4]), res["embedding"][:4], atol=1e-5)


def test_pli_targets_join_the_2d_term(data, split):
    x, y, _ = data
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(y.size, 2))
    mask = np.zeros(y.size, bool)
    mask[split.train[:10]] = True
    res = train_fold(x, y, split, cfg(loss="tml", epochs=2, svm_every=2),
                     pli_targets=(targets, mask))
    assert all(r["intervention"] > 0 for r in res.history)  # the PLI term acts (α = 0.9)
    with pytest.raises(ValueError, match="pali"):
        train_fold(x, y, split, cfg(loss="ali"), pli_targets=(targets, mask))


def test_bad_inputs_raise_one_line(data, split):
    x, y, _ = data
    with pytest.raises(ValueError, match="at least two classes"):
        train_fold(x, np.zeros_like(y), split, cfg())
    with pytest.raises(ValueError, match="patches must be"):
        train_fold(x[..., :2], y, split, cfg())
    with pytest.raises(ValueError, match="NaN"):
        grey = np.full(x.shape[:3], np.nan, np.float32)
        train_fold(grey, y, split, cfg())
    with pytest.raises(ValueError, match="groups|region|fold"):
        train_embedding(x, y, np.zeros_like(y), cfg(), folds=3)
