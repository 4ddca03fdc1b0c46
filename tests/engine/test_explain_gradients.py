"""Gradient methods: captum reference values, patch resolution, model untouched, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, LayerGradCam
from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
from torch import nn

from hemalens.engine.explain.gradients import (
    NotApplicable,
    PatchForward,
    attribution_model,
    cam_layer,
    grad_cam,
    guided_backprop,
)
from hemalens.engine.explain.methods import METHODS, ExplanationResult, explain_cells, methods_for
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.models import LeNet5, ModelSpec, build_model


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return build_model(ModelSpec("lenet5", 4, 0.25, 32))


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return build_model(ModelSpec("alexnet", 3, 0.5, 64))


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(1).random((3, 50, 50), dtype=np.float32)


# ---- captum reference values (methods-notes: BasicModel_ConvNet_One_Conv) -------------

@pytest.mark.parametrize(
    ("layer", "expected"),
    [("conv1", [[11.25, 13.5], [20.25, 22.5]]), ("relu1", [[0.0, 4.0], [28.0, 32.5]])],
)
@pytest.mark.parametrize("relu", [False, True])
def test_grad_cam_reproduces_captum_reference_values(layer, expected, relu):
    net = BasicModel_ConvNet_One_Conv()
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    attr = grad_cam(net, getattr(net, layer), x, 0, relu=relu)
    assert attr.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(attr[0, 0].detach().numpy(), expected, rtol=0, atol=1e-5)


def test_grad_cam_upsampling_is_bilinear_of_the_layer_map():
    net = BasicModel_ConvNet_One_Conv()
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    up = grad_cam(net, net.relu1, x, 0, size=(7, 5))
    raw = LayerGradCam(net, net.relu1).attribute(x, target=0, relu_attributions=True)
    ref = F.interpolate(raw, size=(7, 5), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(up.detach().numpy(), ref.detach().numpy(), atol=1e-6)


# ---- patch resolution: gradients flow through preprocess --------------------------------

@pytest.mark.parametrize("arch", ["lenet", "alexnet"])
@pytest.mark.parametrize("signed", [False, True])
def test_saliency_is_the_patch_gradient_through_preprocess(arch, signed, request, patches):
    model = request.getfixturevalue(arch)
    model.eval()
    res = explain_cells(model, patches[:2], "saliency", targets=[1, 2], abs=not signed)
    x = torch.from_numpy(patches[:2]).requires_grad_(True)
    logits = model(model.preprocess(x))  # AlexNet: grey replicated to 3 channels
    grad = torch.autograd.grad(logits[0, 1] + logits[1, 2], x)[0].numpy()
    assert res.maps.shape == (2, 50, 50) and res.maps.dtype == np.float32
    np.testing.assert_allclose(res.maps, grad if signed else np.abs(grad), rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_guided_backprop_matches_captum_on_a_non_inplace_twin(lenet, patches):
    twin = LeNet5(lenet.spec)
    twin.load_state_dict(lenet.state_dict())
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.from_numpy(patches)[:, None].requires_grad_(True)
    ref = GuidedBackprop(PatchForward(twin.eval())).attribute(x, target=3)[:, 0]
    ours = explain_cells(lenet, patches, "guided-backprop", targets=[3, 3, 3]).maps
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-5, atol=1e-8)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(alexnet, patches):
    x = torch.from_numpy(patches[:1])[:, None]
    net = attribution_model(alexnet)
    layer = cam_layer(net.model)
    gbp = guided_backprop(net, x.clone().requires_grad_(True), 2)
    cam = grad_cam(net, layer, x.clone().requires_grad_(True), 2, size=(50, 50))
    ours = explain_cells(alexnet, patches[:1], "guided-gradcam", targets=[2]).maps[0]
    np.testing.assert_allclose(ours, (gbp * cam)[0, 0].detach().numpy(), rtol=1e-4, atol=1e-9)
    gc = explain_cells(alexnet, patches[:1], "gradcam", targets=[2]).maps[0]
    np.testing.assert_allclose(gc, cam[0, 0].detach().numpy(), rtol=1e-5, atol=1e-9)
    assert gc.min() >= 0  # ReLU applied, raw scale (no min-max)


def test_occlusion_equals_brute_force_window_drops(lenet):
    lenet.eval()
    patch = np.random.default_rng(2).random((1, 20, 20), dtype=np.float32)
    res = explain_cells(lenet, patch, "occlusion", targets=[1], window=6, stride=2)
    forward = PatchForward(lenet)
    with torch.no_grad():
        x = torch.from_numpy(patch)
        base = forward(x[:, None])[0, 1]
        total = torch.zeros(20, 20)
        count = torch.zeros(20, 20)
        for r in range(0, 15, 2):
            for c in range(0, 15, 2):
                occluded = x.clone()
                occluded[:, r:r + 6, c:c + 6] = 0.0
                total[r:r + 6, c:c + 6] += base - forward(occluded[:, None])[0, 1]
                count[r:r + 6, c:c + 6] += 1
    np.testing.assert_allclose(res.maps[0], (total / count).numpy(), rtol=1e-4, atol=1e-6)


# ---- applicability -------------------------------------------------------------------------

def test_gradcam_not_applicable_to_lenet5(lenet, patches):
    assert methods_for(lenet) == ("lime", "guided-backprop", "occlusion", "saliency")
    for method in ("gradcam", "guided-gradcam"):
        with pytest.raises(NotApplicable, match="LeNet5") as err:
            explain_cells(lenet, patches, method)
        assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_alexnet_cam_layer_is_last_conv_relu(alexnet):
    assert methods_for(alexnet) == METHODS
    assert cam_layer(alexnet) is alexnet.features[11]
    assert isinstance(alexnet.features[10], nn.Conv2d)


# ---- the caller's model is left as it was --------------------------------------------------

def test_model_untouched_and_mode_restored(alexnet, patches):
    alexnet.train()
    alexnet.classifier[2].eval()  # a mixed state must come back as it was
    modes = [m.training for m in alexnet.modules()]
    before = {k: v.clone() for k, v in alexnet.state_dict().items()}
    for method in ("guided-gradcam", "guided-backprop", "saliency"):
        res = explain_cells(alexnet, patches[:1], method)
        assert isinstance(res, ExplanationResult) and res.method == method
        assert res.targets.dtype == np.int64 and res.seconds > 0
    assert [m.training for m in alexnet.modules()] == modes
    assert all(m.inplace for m in alexnet.modules() if isinstance(m, nn.ReLU))
    assert all(p.requires_grad and p.grad is None for p in alexnet.parameters())
    for k, v in alexnet.state_dict().items():
        assert torch.equal(v, before[k])
    hooks = [m._forward_hooks or m._backward_hooks for m in alexnet.modules()]
    assert not any(hooks)


def test_default_target_is_eval_prediction_and_targets_matter(lenet, patches):
    lenet.train()  # dropout on: the default target must still be the eval-mode prediction
    res = explain_cells(lenet, patches, "saliency")
    lenet.eval()
    with torch.no_grad():
        pred = lenet(lenet.preprocess(patches)).argmax(1).numpy()
    np.testing.assert_array_equal(res.targets, pred)
    other = explain_cells(lenet, patches, "saliency", targets=(pred + 1) % 4)
    assert not np.allclose(res.maps, other.maps)


# ---- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("patches", "kwargs", "match"),
    [
        (np.zeros((0, 50, 50), np.float32), {}, "empty stack"),
        (np.zeros((50, 50), np.float32), {}, "shape \\(N, H, W\\)"),
        (np.zeros((2, 1, 50, 50), np.float32), {}, "shape \\(N, H, W\\)"),
        (np.where(np.eye(50)[None] > 0, np.nan, 0.5).astype(np.float32), {}, "NaN"),
        (np.zeros((2, 50, 50), np.float32), {"method": "deeplift"}, "unknown explanation"),
        (np.zeros((2, 50, 50), np.float32), {"targets": [0, 4]}, "out of range"),
        (np.zeros((2, 50, 50), np.float32), {"targets": [-1, 0]}, "out of range"),
        (np.zeros((2, 50, 50), np.float32), {"targets": [0]}, "shape \\(2,\\)"),
        (np.zeros((2, 50, 50), np.float32), {"window": 5}, "unknown option"),
        (np.zeros((2, 50, 50), np.float32), {"method": "occlusion", "stride": 7}, "stride"),
        (np.zeros((2, 50, 50), np.float32), {"method": "occlusion", "window": 51}, "window"),
        (np.zeros((2, 50, 50), np.float32), {"method": "lime", "num_samples": 1}, "num_samples"),
        (np.zeros((2, 50, 50), np.float32), {"probs_fn": lambda p: p}, "lime' only"),
    ],
)
def test_bad_input_is_a_one_line_value_error(lenet, patches, kwargs, match):
    kwargs = {"method": "saliency", **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        explain_cells(lenet, patches, **kwargs)
    assert "\n" not in str(err.value)


def test_progress_and_cancellation_between_batches(lenet, patches):
    seen = []
    progress = CallbackProgress(on_progress=lambda d, t: seen.append((d, t)))
    explain_cells(lenet, patches, "guided-backprop", batch_size=2, progress=progress)
    assert seen == [(2, 3), (3, 3)]
    progress.cancel()
    with pytest.raises(Cancelled):
        explain_cells(lenet, patches, "occlusion", progress=progress)
