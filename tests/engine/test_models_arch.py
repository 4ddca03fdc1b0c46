"""LeNet5 / AlexNet: shapes, dropout only in the head, preprocessing, weights as arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hemalens.engine.models import (
    DEFAULT_DROPOUT,
    AlexNet,
    LeNet5,
    ModelSpec,
    build_model,
    model_from_arrays,
    state_to_arrays,
)


@pytest.fixture(scope="module")
def alexnet() -> AlexNet:
    torch.manual_seed(0)
    return build_model(ModelSpec("alexnet", 4, 0.5, 64))


@pytest.fixture()
def lenet() -> LeNet5:
    torch.manual_seed(0)
    return build_model(ModelSpec("lenet5", 4, 0.25, 32))


def _patches(n: int, size: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((n, size, size), np.float32))


# --- spec -------------------------------------------------------------------------------------


def test_spec_round_trip_and_defaults():
    spec = ModelSpec("alexnet", 4, 0.5, 224)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == {"arch": "alexnet", "n_classes": 4, "dropout": 0.5,
                              "input_size": 224}  # fmt: skip
    assert DEFAULT_DROPOUT == {"lenet5": 0.25, "alexnet": 0.5}  # paper 1, §4.1
    assert spec.in_channels == 3 and ModelSpec("lenet5", 4, 0.0, 32).in_channels == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "resnet"}, "unknown architecture"),
        ({"n_classes": 1}, "n_classes must be within 2..1000"),
        ({"n_classes": 10**9}, "n_classes must be within 2..1000"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"input_size": 64}, "lenet5 takes 32x32"),
        ({"arch": "alexnet", "input_size": 32}, "alexnet needs input_size within 63..1024"),
        ({"arch": "alexnet", "input_size": 10**7}, "alexnet needs input_size within 63..1024"),
    ],
)
def test_spec_rejects_bad_values(kwargs, match):
    base = {"arch": "lenet5", "n_classes": 4, "dropout": 0.25, "input_size": 32}
    with pytest.raises(ValueError, match=match):
        ModelSpec(**(base | kwargs))


def test_spec_from_dict_rejects_missing_and_unknown_keys():
    with pytest.raises(ValueError, match="missing keys \\['input_size'\\]"):
        ModelSpec.from_dict({"arch": "lenet5", "n_classes": 4, "dropout": 0.2})
    with pytest.raises(ValueError, match="unknown keys \\['width'\\]"):
        ModelSpec.from_dict({"arch": "lenet5", "n_classes": 4, "dropout": 0.2,
                             "input_size": 32, "width": 3})  # fmt: skip


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 5])
def test_lenet5_shapes(k):
    model = build_model(ModelSpec("lenet5", k, 0.25, 32)).eval()
    x = model.preprocess(_patches(6))
    assert x.shape == (6, 1, 32, 32) and x.dtype == torch.float32
    f = model.trunk(x)
    assert f.shape == (6, 400)
    out = model(x)
    assert out.shape == (6, k)
    torch.testing.assert_close(out, model.head(f), rtol=0, atol=0)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 6, (5, 5)), (6, 16, (5, 5))]  # fmt: skip
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, k)]


def test_alexnet_shapes_small_input(alexnet):
    model = alexnet.eval()
    x = model.preprocess(_patches(3))
    assert x.shape == (3, 3, 64, 64)
    f = model.trunk(x)
    assert f.shape == (3, 256 * 6 * 6)
    out = model(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    torch.testing.assert_close(out, model.head(f), rtol=0, atol=0)
    # trunk = torchvision's feature extractor
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 5
    assert model.classifier[-1].out_features == 4


def test_alexnet_smallest_input():
    model = build_model(ModelSpec("alexnet", 3, 0.5, 63)).eval()
    assert model(model.preprocess(_patches(1))).shape == (1, 3)


# --- dropout placement ------------------------------------------------------------------------


def _check_head(model, p: float, k: int) -> None:
    trunk_mods = list(model.features.modules()) + list(getattr(model, "avgpool", nn.Identity())
                                                        .modules())  # fmt: skip
    assert not any(isinstance(m, nn.Dropout) for m in trunk_mods), "dropout in the trunk"
    head = list(model.classifier)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    drops = [m for m in head if isinstance(m, nn.Dropout)]
    assert len(drops) == len(linears) - 1 == 2  # one per hidden FC layer
    assert len([m for m in model.modules() if isinstance(m, nn.Dropout)]) == len(drops)
    assert all(d.p == p for d in drops)
    for i, m in enumerate(head):
        if isinstance(m, nn.Dropout):  # Linear -> ReLU -> Dropout
            assert isinstance(head[i - 1], nn.ReLU) and isinstance(head[i - 2], nn.Linear)
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == k


def test_dropout_only_after_hidden_fc_layers(lenet, alexnet):
    _check_head(lenet, 0.25, 4)
    _check_head(alexnet, 0.5, 4)


@pytest.mark.parametrize("which", ["lenet", "alexnet"])
def test_trunk_deterministic_head_stochastic_in_train_mode(which, request):
    model = request.getfixturevalue(which)
    x = model.preprocess(_patches(4))
    model.train()
    try:
        f1, f2 = model.trunk(x), model.trunk(x)
        torch.testing.assert_close(f1, f2, rtol=0, atol=0)  # nothing random in the trunk
        assert not torch.equal(model.head(f1), model.head(f1))  # dropout samples differ
    finally:
        model.eval()
    torch.testing.assert_close(model.head(f1), model.head(f1), rtol=0, atol=0)


# --- preprocessing ----------------------------------------------------------------------------


def test_preprocess_lenet_downscale_matches_pillow(lenet):
    p = _patches(2, seed=3)
    x = lenet.preprocess(p)
    for i in range(2):  # PIL's bilinear reduce is antialiased: the reference resize
        ref = Image.fromarray(p[i].numpy(), mode="F").resize((32, 32), Image.Resampling.BILINEAR)
        np.testing.assert_allclose(x[i, 0].numpy(), np.asarray(ref), atol=2e-3)


def test_preprocess_alexnet_upscale_and_replicates_grey(alexnet):
    p = _patches(2, seed=4)
    x = alexnet.preprocess(p.numpy())  # numpy is accepted too
    assert x.shape == (2, 3, 64, 64)
    ref = F.interpolate(p[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:, :1], ref)
    torch.testing.assert_close(x[:, 1], x[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(x[:, 2], x[:, 0], rtol=0, atol=0)


def test_preprocess_keeps_values_and_passes_right_size(lenet):
    const = torch.full((1, 50, 50), 0.4)
    torch.testing.assert_close(lenet.preprocess(const), torch.full((1, 1, 32, 32), 0.4))
    p32 = _patches(2, size=32)
    torch.testing.assert_close(lenet.preprocess(p32)[:, 0], p32, rtol=0, atol=0)
    assert lenet.preprocess(p32[:, None]).shape == (2, 1, 32, 32)  # (N, 1, H, W) accepted
    with pytest.raises(ValueError, match="patches must have shape \\(N, H, W\\)"):
        lenet.preprocess(torch.zeros(50, 50))


# --- weights as arrays ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["lenet", "alexnet"])
def test_weights_round_trip_exact(which, request):
    model = request.getfixturevalue(which).eval()
    arrays = state_to_arrays(model)
    assert set(arrays) == set(model.state_dict())
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays.values())
    back = model_from_arrays(model.spec, arrays)
    assert not back.training
    for key, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], t), key
    x = model.preprocess(_patches(2))
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    arrays["classifier.0.bias"][0] += 1.0  # a copy: the model is untouched
    assert not torch.equal(model.state_dict()["classifier.0.bias"],
                           torch.from_numpy(arrays["classifier.0.bias"]))  # fmt: skip


def test_model_from_arrays_rejects_foreign_weights(lenet):
    arrays = state_to_arrays(lenet)
    spec5 = ModelSpec("lenet5", 5, 0.25, 32)
    with pytest.raises(ValueError, match="classifier.6.weight.*shape"):
        model_from_arrays(spec5, arrays)
    del arrays["features.0.bias"]
    with pytest.raises(ValueError, match="missing \\['features.0.bias'\\]"):
        model_from_arrays(lenet.spec, arrays)


def test_build_model_uses_the_global_seed():
    spec = ModelSpec("lenet5", 4, 0.25, 32)
    torch.manual_seed(7)
    a = state_to_arrays(build_model(spec))
    torch.manual_seed(7)
    b = state_to_arrays(build_model(spec))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # He init: weight std ~ sqrt(2 / fan_in) for the first conv (fan_in 25)
    assert abs(a["features.0.weight"].std() / np.sqrt(2 / 25) - 1) < 0.35
    assert not a["features.0.bias"].any()
