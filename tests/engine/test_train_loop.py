"""Training loop: learns an easy problem, is deterministic, stops early, cancels, checks inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.models import ModelSpec
from hemalens.engine.train import (
    TrainConfig,
    make_split,
    random_dihedral,
    resolve_device,
    train_classifier,
)

FAST = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "device": "cpu"}


def discs(labels: np.ndarray, seed: int = 0, size: int = 50) -> np.ndarray:
    """Bright (class 0) vs dim (class 1) sphere-like discs of random size and position."""
    rng = np.random.default_rng(seed)
    n = labels.size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    r = rng.uniform(8, 14, (n, 1, 1))
    cx, cy = rng.normal(0, 2.0, (2, n, 1, 1))
    amp = np.where(labels == 0, rng.uniform(0.65, 0.9, n), rng.uniform(0.3, 0.5, n))
    h = np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2, 0, None))
    img = amp[:, None, None] * h + rng.normal(0, 0.03, (n, size, size))
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def easy():
    y = np.arange(400) % 2
    return discs(y), y


def _val_f1(model, x, y, idx):
    with torch.no_grad():
        pred = model(model.preprocess(torch.from_numpy(x[idx]))).argmax(1).numpy()
    return f1_score(y[idx], pred, average="macro")


def test_learns_bright_vs_dim(easy):
    x, y = easy
    seen = []
    progress = CallbackProgress(on_progress=lambda d, t: seen.append((d, t)))
    res = train_classifier(x, y, 2, TrainConfig(**FAST), progress=progress)
    assert res.val_macro_f1 > 0.9, res.history
    assert _val_f1(res.model, x, y, res.split["test"]) > 0.9
    assert seen[0] == (0, 4) and seen[1] == (1, 4)  # progress per epoch out of epochs
    assert res.spec == ModelSpec("lenet5", 2, 0.25, 32)
    assert res.device == "cpu" and res.seconds > 0 and not res.model.training
    assert next(res.model.parameters()).device.type == "cpu"
    assert [h["epoch"] for h in res.history] == list(range(1, len(res.history) + 1))
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
            "seconds"} <= set(res.history[0])  # fmt: skip
    sizes = [res.split[k].size for k in ("train", "val", "test")]
    assert sizes == [280, 80, 40]  # the default 70/20/10 stratified split


def test_same_seed_same_weights_other_seed_differs(easy):
    x, y = easy[0][:120], easy[1][:120]
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=5)
    a = train_classifier(x, y, 2, cfg).model.state_dict()
    torch.manual_seed(123)  # the caller's global RNG state must not matter
    b = train_classifier(x, y, 2, cfg).model.state_dict()
    c = train_classifier(x, y, 2, TrainConfig(epochs=2, batch_size=16, device="cpu", seed=6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c.model.state_dict()[k]) for k in a)


def test_global_rng_left_alone(easy):
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    train_classifier(easy[0][:60], easy[1][:60], 2, TrainConfig(epochs=1, device="cpu"))
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_early_stopping_restores_best_epoch():
    # Labels are coin flips: validation F1 wanders, so the last epoch is not the best one.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    x = discs(rng.integers(0, 2, 160), seed=1)
    cfg = TrainConfig(epochs=30, patience=3, batch_size=16, lr=3e-3, device="cpu", seed=2)
    res = train_classifier(x, y, 2, cfg)
    f1s = [h["val_macro_f1"] for h in res.history]
    assert len(f1s) < 30  # stopped early ...
    assert len(f1s) == res.best_epoch + cfg.patience  # ... patience epochs after the best
    assert res.val_macro_f1 == max(f1s) == f1s[res.best_epoch - 1]
    assert f1s.index(max(f1s)) == res.best_epoch - 1  # the first best epoch wins
    assert f1s[-1] < res.val_macro_f1
    # the returned weights are the best epoch's, not the last epoch's
    assert _val_f1(res.model, x, y, res.split["val"]) == pytest.approx(res.val_macro_f1, abs=0)


def test_cancel_stops_between_batches(easy):
    x, y = easy
    calls = {"n": 0}

    class StopAfter:
        def set_status(self, text):
            pass

        def set_progress(self, done, total):
            pass

        def is_cancelled(self):
            calls["n"] += 1
            return calls["n"] >= 3  # the third batch is never run

    with pytest.raises(Cancelled):
        train_classifier(x, y, 2, TrainConfig(epochs=1000, batch_size=8, device="cpu"),
                         progress=StopAfter())  # fmt: skip
    assert calls["n"] == 3


def test_cancel_after_first_epoch(easy):
    x, y = easy
    progress = CallbackProgress()
    epochs = []

    def on_progress(done, total):
        epochs.append(done)
        if done == 1:
            progress.cancel()

    progress._on_progress = on_progress
    with pytest.raises(Cancelled):
        train_classifier(x, y, 2, TrainConfig(epochs=50, device="cpu"), progress=progress)
    assert epochs == [0, 1]


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((0, 50, 50), np.float32), np.zeros(0, int), "no cells to train on"),
        (np.zeros((6, 50, 50), np.float32), np.zeros(6, int), "same class.*at least two"),
        (np.zeros((6, 50, 50), np.float32), np.array([0, 1, 0, 1, 0, 3]), "labels must lie in"),
        (np.zeros((6, 50, 50), np.float32), np.zeros(5, int), "labels have shape"),
        (np.zeros((6, 50, 50), np.float32), np.zeros(6), "integer class codes"),
        (np.zeros((6, 2500), np.float32), np.zeros(6, int), "\\(N, H, W\\)"),
    ],
)
def test_bad_inputs(images, labels, match):
    with pytest.raises(ValueError, match=match):
        train_classifier(images, labels, 2, TrainConfig(device="cpu"))


def test_nan_patches_are_named(easy):
    x, y = easy[0][:30].copy(), easy[1][:30]
    x[4, 10, 10] = np.nan
    x[7, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 patch\\(es\\) contain NaN.*rows \\[4, 7\\]"):
        train_classifier(x, y, 2, TrainConfig(device="cpu"))


def test_given_split_is_used_and_checked(easy):
    x, y = easy[0][:60], easy[1][:60]
    split = make_split(y, seed=9)
    res = train_classifier(x, y, 2, TrainConfig(epochs=1, device="cpu"), split=split)
    assert all(np.array_equal(res.split[k], split[k]) for k in split)
    with pytest.raises(ValueError, match="more than one split"):
        train_classifier(x, y, 2, TrainConfig(epochs=1, device="cpu"),
                         split={"train": np.arange(40), "val": np.arange(30, 60)})  # fmt: skip
    with pytest.raises(ValueError, match="single class"):
        train_classifier(x, y, 2, TrainConfig(epochs=1, device="cpu"),
                         split={"train": np.arange(0, 60, 2), "val": np.arange(1, 60, 2)})


def test_donor_held_out_training(easy):
    x, y = easy[0][:80], easy[1][:80]
    donors = np.where(np.arange(80) < 20, "d1", "d2")
    res = train_classifier(x, y, 2, TrainConfig(epochs=1, device="cpu", test_donor="d1"),
                           donors=donors)  # fmt: skip
    np.testing.assert_array_equal(res.split["test"], np.arange(20))


def test_config_defaults_and_validation():
    assert TrainConfig().spec(4) == ModelSpec("lenet5", 4, 0.25, 32)
    assert TrainConfig(arch="alexnet").spec(4) == ModelSpec("alexnet", 4, 0.5, 64)
    assert TrainConfig(arch="alexnet", input_size=224, dropout=0.0).spec(3).input_size == 224
    assert TrainConfig().to_dict()["fractions"] == [0.7, 0.2, 0.1]
    for kwargs, match in [({"arch": "vgg"}, "unknown architecture"), ({"epochs": 0}, "epochs"),
                          ({"lr": 0}, "lr"), ({"patience": 0}, "patience"),
                          ({"dropout": 1.5}, "dropout"), ({"input_size": 50}, "32x32")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kwargs)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_random_dihedral_gives_the_eight_symmetries():
    base = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    x = base.repeat(400, 1, 1)
    out = random_dihedral(x, np.random.default_rng(0))
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (base, base.flip(-1)) for k in range(4)]
    hits = [int(sum(torch.equal(o[None], v) for o in out)) for v in views]
    assert sum(hits) == 400  # every output is one of the 8 symmetries of the input
    assert min(hits) > 25  # and all 8 occur (~50 each)
    assert torch.equal(x, base.repeat(400, 1, 1))  # the input is untouched
    again = random_dihedral(x, np.random.default_rng(0))
    assert torch.equal(out, again)  # seeded
    four_d = random_dihedral(x[:, None], np.random.default_rng(0))
    assert torch.equal(four_d[:, 0], out)
    with pytest.raises(ValueError, match="square"):
        random_dihedral(torch.zeros(2, 4, 5), np.random.default_rng(0))
