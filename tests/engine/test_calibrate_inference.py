"""Frequentist and MC-dropout inference: modes, seeding, batching, and the statistical
equivalence of the cached-trunk sampler with T full forward passes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torch import nn

from hemalens.engine.calibrate import inference as inf
from hemalens.engine.calibrate import mc_dropout_probs, mc_summary, predict_logits
from hemalens.engine.jobs import CallbackProgress, Cancelled


class TinyNet(nn.Module):
    """Conv trunk (optionally with BatchNorm) + FC head with dropout; protocol of engine.models."""

    def __init__(self, p: float = 0.5, k: int = 3, bn: bool = False, trunk_dropout: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 4, 3)]
        if bn:
            layers.append(nn.BatchNorm2d(4))
        layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(4)]
        if trunk_dropout:
            layers.append(nn.Dropout2d(0.3))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, k))
        with torch.no_grad():  # spread the logits so that dropout visibly moves the softmax
            self.fc[3].weight.mul_(8.0)

    def preprocess(self, patches: torch.Tensor) -> torch.Tensor:
        return patches[:, None]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _model(seed: int = 0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw)


def _patches(n: int, seed: int = 1, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


# -- frequentist ---------------------------------------------------------------------------


def test_predict_logits_equals_eval_forward_for_any_batch_size():
    model, x = _model(), _patches(11)
    model.eval()
    with torch.no_grad():
        ref = model(model.preprocess(torch.from_numpy(x))).numpy()
    model.train()
    for bs in (1, 4, 512):
        out = predict_logits(model, x, batch_size=bs)
        assert out.dtype == np.float32 and out.shape == (11, 3)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert all(_modes(model)), "training mode must be restored"
    np.testing.assert_allclose(predict_logits(model, torch.from_numpy(x)), ref, atol=1e-6)
    np.testing.assert_allclose(predict_logits(model, list(x)), ref, atol=1e-6)  # array-like
    calls = []
    predict_logits(model, x, batch_size=4, progress=CallbackProgress(
        on_progress=lambda d, t: calls.append((d, t))))
    assert calls == [(4, 11), (8, 11), (11, 11)]


def test_predict_logits_empty_input_and_bad_inputs():
    model = _model()
    assert predict_logits(model, np.zeros((0, 12, 12), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        predict_logits(model, np.zeros((12, 12), np.float32))
    bad = _patches(6)
    bad[4, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 patch\(es\) contain NaN.*indices 4"):
        predict_logits(model, bad)
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, _patches(2), batch_size=0)


# -- MC dropout: modes, seeding, cancellation ----------------------------------------------


@pytest.mark.parametrize("cached", [True, False])
def test_only_dropout_is_stochastic_and_batchnorm_stays_in_eval(cached):
    model = _model(bn=True, p=0.0)
    bn = model.features[1]
    with torch.no_grad():  # non-trivial running statistics: batch statistics would differ
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(2.0)
    seen: dict[str, bool] = {}
    bn.register_forward_pre_hook(lambda m, _i: seen.__setitem__("bn", m.training))
    model.fc[2].register_forward_pre_hook(lambda m, _i: seen.__setitem__("dropout", m.training))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    model.train()
    x = _patches(7)
    probs = mc_dropout_probs(model, x, passes=5, cached_trunk=cached, batch_size=3)
    assert seen == {"bn": False, "dropout": True}
    ref = torch.softmax(torch.from_numpy(predict_logits(model, x)), -1).numpy()
    np.testing.assert_allclose(probs, np.broadcast_to(ref, probs.shape), atol=1e-6)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), f"BatchNorm {k} changed"
    assert all(_modes(model))


def test_seeded_reproducible_and_global_rng_untouched():
    model, x = _model(), _patches(6)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = mc_dropout_probs(model, x, passes=20, seed=7)
    assert torch.equal(state, torch.get_rng_state()), "global RNG state must be restored"
    b = mc_dropout_probs(model, x, passes=20, seed=7)
    c = mc_dropout_probs(model, x, passes=20, seed=8)
    assert a.shape == (20, 6, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std(axis=0).max() > 0.01, "dropout must make the passes differ"
    np.testing.assert_allclose(a.sum(axis=2), 1.0, atol=1e-5)


def test_cancellation_and_errors_restore_modes_and_rng():
    model, x = _model(bn=True), _patches(10)
    model.eval()
    calls, stop = [], threading.Event()
    prog = CallbackProgress(on_progress=lambda d, t: (calls.append((d, t)), stop.set()),
                            cancel_event=stop)
    state = torch.get_rng_state()
    with pytest.raises(Cancelled):
        mc_dropout_probs(model, x, passes=4, batch_size=3, progress=prog)
    assert calls == [(12, 40)], "progress counts cell-passes; cancelled after the first batch"
    assert not any(_modes(model))
    assert torch.equal(state, torch.get_rng_state())

    def boom(_f):
        raise RuntimeError("head failed")

    model.head = boom  # instance attribute shadows the method
    with pytest.raises(RuntimeError, match="head failed"):
        mc_dropout_probs(model, x, passes=2)
    assert not any(_modes(model))


def test_mc_dropout_rejects_bad_models_and_inputs():
    with pytest.raises(ValueError, match="trunk runs dropout"):
        mc_dropout_probs(_model(trunk_dropout=True), _patches(3), passes=2)
    # the naive path is fine with dropout anywhere
    assert mc_dropout_probs(_model(trunk_dropout=True), _patches(3), passes=2,
                            cached_trunk=False).shape == (2, 3, 3)
    no_dropout = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(ValueError, match="no dropout"):
        mc_dropout_probs(no_dropout, _patches(3), passes=2, cached_trunk=False)
    with pytest.raises(ValueError, match="passes"):
        mc_dropout_probs(_model(), _patches(3), passes=0)
    with pytest.raises(ValueError, match="NaN"):
        mc_dropout_probs(_model(), np.full((2, 12, 12), np.inf, np.float32), passes=2)
    assert mc_dropout_probs(_model(), np.zeros((0, 12, 12), np.float32)).shape == (100, 0, 3)


def test_trunk_once_per_batch_and_head_block_bounded(monkeypatch):
    model, x = _model(), _patches(10)
    trunk_calls, head_rows = [], []
    model.features.register_forward_hook(lambda m, i, o: trunk_calls.append(len(i[0])))
    model.fc.register_forward_pre_hook(lambda m, i: head_rows.append(len(i[0])))
    monkeypatch.setattr(inf, "HEAD_BLOCK_ELEMENTS", 4 * 64 * 3)  # 3 passes of a 4-cell batch
    probs = mc_dropout_probs(model, x, passes=7, batch_size=4)
    assert probs.shape == (7, 10, 3)
    assert trunk_calls == [4, 4, 2]
    assert max(head_rows) * 64 <= inf.HEAD_BLOCK_ELEMENTS
    assert sum(head_rows) == 10 * 7
    # every (pass, cell) slot was written with a probability vector
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)


# -- statistical equivalence: cached trunk vs T full passes ----------------------------------


def _assert_same_distribution(a: np.ndarray, b: np.ndarray, n_se: float = 5.0) -> None:
    """Per-cell mean and std within ``n_se`` MC standard errors; KS per class on pooled."""
    t = a.shape[0]
    mean_a, mean_b = a.mean(0), b.mean(0)
    se_mean = np.sqrt((a.var(0) + b.var(0)) / t)
    assert np.all(np.abs(mean_a - mean_b) <= n_se * se_mean + 1e-6), "means differ"

    def se_std(x):  # delta method: Var(s^2) ~ (m4 - s^4) / T
        s = x.std(0)
        m4 = ((x - x.mean(0)) ** 4).mean(0)
        return np.sqrt(np.maximum(m4 - s**4, 0) / t) / (2 * np.maximum(s, 1e-12))

    se_s = np.sqrt(se_std(a) ** 2 + se_std(b) ** 2)
    assert np.all(np.abs(a.std(0) - b.std(0)) <= n_se * se_s + 1e-6), "stds differ"
    for k in range(a.shape[2]):
        assert ks_2samp(a[..., k].ravel(), b[..., k].ravel()).pvalue > 0.01, f"class {k}"


def test_cached_trunk_matches_full_passes_in_distribution():
    model, x = _model(p=0.5), _patches(4)
    cached = mc_dropout_probs(model, x, passes=2000, seed=1, cached_trunk=True)
    full = mc_dropout_probs(model, x, passes=2000, seed=2, cached_trunk=False)
    assert cached.std(0).max() > 0.1, "the check needs visibly stochastic outputs"
    _assert_same_distribution(cached, full)
    # ... and the check has power: a different dropout rate is detected
    model.fc[2].p = 0.3
    other = mc_dropout_probs(model, x, passes=2000, seed=3, cached_trunk=False)
    pvals = [ks_2samp(cached[..., k].ravel(), other[..., k].ravel()).pvalue for k in range(3)]
    assert min(pvals) < 1e-4


def test_mc_summary_mean_renormalised_median_std():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(9, 5))  # (T, N, K)
    s = mc_summary(p)
    np.testing.assert_allclose(s["mean"], p.mean(0))
    np.testing.assert_allclose(s["std"], p.std(0, ddof=0))
    med = np.median(p, 0)
    assert not np.allclose(med.sum(1), 1.0), "raw medians do not sum to 1"
    np.testing.assert_allclose(s["median"], med / med.sum(1, keepdims=True))
    np.testing.assert_allclose(s["median"].sum(1), 1.0)
    with pytest.raises(ValueError, match=r"\(T>0, N, K\)"):
        mc_summary(p[0])


# -- the real classifiers of engine.models ---------------------------------------------------

models = pytest.importorskip("hemalens.engine.models")


def test_lenet5_from_build_model():
    torch.manual_seed(0)
    model = models.build_model(models.ModelSpec("lenet5", 4, 0.25, 32))
    with torch.no_grad():
        model.classifier[-1].weight.mul_(30.0)  # untrained logits are tiny; spread them
    x = _patches(5, size=50)
    logits = predict_logits(model, x)
    assert logits.shape == (5, 4)
    assert inf._head_split(model) is not None, "the FC before the first dropout is cached"
    cached = mc_dropout_probs(model, x, passes=2000, seed=1)
    full = mc_dropout_probs(model, x, passes=2000, seed=2, cached_trunk=False)
    assert cached.shape == (2000, 5, 4)
    assert cached.std(0).max() > 0.05
    _assert_same_distribution(cached, full)
    # p = 0: every pass is the frequentist prediction
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    probs = mc_dropout_probs(model, x, passes=3)
    ref = torch.softmax(torch.from_numpy(logits), -1).numpy()
    np.testing.assert_allclose(probs, np.broadcast_to(ref, probs.shape), atol=1e-5)


def test_alexnet_from_build_model_runs_and_agrees_at_zero_dropout():
    torch.manual_seed(0)
    model = models.build_model(models.ModelSpec("alexnet", 4, 0.0, 64))
    x = _patches(3, size=50)
    logits = predict_logits(model, x)
    probs = mc_dropout_probs(model, x, passes=2)
    ref = torch.softmax(torch.from_numpy(logits), -1).numpy()
    np.testing.assert_allclose(probs, np.broadcast_to(ref, probs.shape), atol=1e-5)


def test_mc_logits_and_probs_come_from_the_same_samples():
    from hemalens.engine.calibrate import mc_dropout_logits, mc_softmax
    from hemalens.engine.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", 4, 0.25, 32)).eval()
    x = np.random.default_rng(1).random((6, 50, 50), dtype=np.float32)
    logits = mc_dropout_logits(model, x, passes=7, seed=3)
    probs = mc_dropout_probs(model, x, passes=7, seed=3)
    assert logits.shape == probs.shape == (7, 6, 4)
    np.testing.assert_allclose(mc_softmax(logits), probs, rtol=1e-5, atol=1e-6)
