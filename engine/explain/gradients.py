"""Gradient and perturbation explanations through captum, at patch resolution.

Every method differentiates (or perturbs) the *patch*: the network sees
``model.preprocess(patch)`` (bilinear resize, grey channel replicated for AlexNet), both
differentiable, so gradients come back at the patch's (H, W) and the three replicated
AlexNet channels are summed by autograd. The attribution runs on a private copy of the
model's modules (sharing its weight tensors, which are only read) whose ReLUs are not in
place (captum's guided backpropagation hooks only ``nn.ReLU`` modules, and backward hooks
fail on in-place ones); the caller's modules, modes and hooks are never touched.

Conventions (all maps are raw: no min-max normalisation):

- ``saliency``: vanilla gradient of the target logit (Simonyan et al. 2014, paper 1 A.4
  "Backpropagation"), **absolute** value by default -- the sign of a single pixel's
  gradient is not meaningful to a reader, and that is Simonyan's and captum's default;
  ``abs=False`` gives the signed gradient.
- ``guided-backprop``: captum ``GuidedBackprop`` (Springenberg et al. 2015), signed.
- ``gradcam``: captum ``LayerGradCam`` on the output of the last convolution's ReLU,
  **with** the ReLU of Selvaraju et al. (2017, eq. 2) -- only evidence *for* the class,
  as Grad-CAM heat maps show it -- upsampled bilinearly to the patch size;
  ``relu=False`` gives the raw signed map. AlexNet's last convolution block is 3x3 at
  64 px input and 13x13 at 224 px (paper 1 A.4), so the map is coarse.
- ``guided-gradcam``: captum ``GuidedGradCam`` = guided backprop x upsampled
  ReLU(Grad-CAM), upsampled bilinearly (captum's default is nearest). Paper 1 §4.3 and
  Fig. 5 call this combination "Guided Backpropagation" and note it cannot be applied to
  LeNet5; plain ``guided-backprop`` here is Springenberg's method and applies to both.
- ``occlusion``: captum ``Occlusion`` with a 6x6 window in patch pixels (paper 1 A.4:
  6x6 on 50x50), stride 1, baseline 0; each pixel gets the mean drop of the target logit
  over the windows covering it.

captum is imported on first use: ``captum.attr`` imports ``matplotlib.pyplot``, which
engine modules must not pull in at import time.

Grad-CAM and guided Grad-CAM raise :class:`NotApplicable` for LeNet5, as paper 1 A.4
decides ("this technique requires that the dimension of the last convolution block of
the model is multidimensional, thus preventing its application to the LeNet5").
"""

from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np
import torch
from torch import nn

from hemalens.engine.jobs import Progress, checkpoint

__all__ = [
    "CAM_METHODS",
    "GRADIENT_METHODS",
    "NotApplicable",
    "PatchForward",
    "attribution_model",
    "cam_layer",
    "grad_cam",
    "gradient_maps",
    "guided_backprop",
    "guided_grad_cam",
    "occlusion",
    "saliency",
]

#: Methods computed here, and those that need a spatial last convolution block.
GRADIENT_METHODS = ("gradcam", "guided-backprop", "guided-gradcam", "occlusion", "saliency")
CAM_METHODS = ("gradcam", "guided-gradcam")

_LENET_REASON = (
    "Grad-CAM needs a multi-dimensional (spatial) last convolution block; paper 1 (§4.3, "
    "A.4) rules LeNet5 out, its last block leaves 5x5 maps that feed the FC head"
)


class NotApplicable(ValueError):
    """An explanation method does not apply to this model (the message says why)."""


class PatchForward(nn.Module):
    """Logits of a classifier as a function of its ``(N, 1, H, W)`` patches.

    Parameters
    ----------
    model : Classifier
        Anything with ``preprocess(patches)`` and ``forward(preprocessed)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see class docstring
        return self.model(self.model.preprocess(x))  # type: ignore[operator]


def attribution_model(model: nn.Module) -> PatchForward:
    """Copy ``model`` for captum (eval mode, no in-place ReLU), wrapped in :class:`PatchForward`.

    Parameters
    ----------
    model : Classifier
        Left untouched.

    Returns
    -------
    PatchForward
        Copy of the modules (sharing the caller's parameter and buffer tensors, which are
        only read) with every ``nn.ReLU`` set to ``inplace=False``, in eval mode.
    """
    # copy the modules, share the tensors: AlexNet's 57 M parameters are not duplicated
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, memo=shared)
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return PatchForward(twin.eval())


def cam_layer(model: nn.Module) -> nn.Module:
    """Return the Grad-CAM layer: the ReLU after the last convolution of ``features``.

    Parameters
    ----------
    model : Classifier
        A classifier (or any module with a ``features`` block of convolutions).

    Returns
    -------
    torch.nn.Module
        For AlexNet the ReLU after ``conv5`` (``features[11]``); the last ``nn.Conv2d``
        itself when no ReLU follows it.

    Raises
    ------
    NotApplicable
        LeNet5 (paper 1, A.4), or no convolution in ``model.features``.
    """
    if getattr(getattr(model, "spec", None), "arch", None) == "lenet5":
        raise NotApplicable(_LENET_REASON)
    features = getattr(model, "features", None)
    layers = list(features.modules()) if isinstance(features, nn.Module) else []
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise NotApplicable("Grad-CAM needs a convolution block in model.features; found none")
    after = [m for m in layers[convs[-1] + 1:] if isinstance(m, nn.ReLU)]
    return after[0] if after else layers[convs[-1]]


def grad_cam(
    forward: nn.Module,
    layer: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    *,
    relu: bool = True,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Grad-CAM of ``layer`` (captum ``LayerGradCam``), optionally upsampled bilinearly.

    Parameters
    ----------
    forward : torch.nn.Module
        Maps ``inputs`` to logits.
    layer : torch.nn.Module
        Submodule of ``forward`` whose output is weighted.
    inputs : torch.Tensor
        ``(N, C, H, W)`` input batch.
    target : int or torch.Tensor
        Class per sample.
    relu : bool
        Apply Grad-CAM's final ReLU (Selvaraju et al. 2017); False returns the raw sum.
    size : (int, int), optional
        Upsample to this size (bilinear, ``align_corners=False``); None keeps the layer's.

    Returns
    -------
    torch.Tensor
        ``(N, 1, h, w)`` at layer resolution or ``size``; no normalisation.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    attr = LayerGradCam(forward, layer).attribute(inputs, target=target, relu_attributions=relu)
    if size is not None:
        attr = LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear")
    return attr


def saliency(
    forward: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor, *, abs: bool = True
) -> torch.Tensor:
    """Vanilla gradient of the target output w.r.t. the input (captum ``Saliency``).

    Parameters
    ----------
    forward : torch.nn.Module
        Maps ``inputs`` to logits.
    inputs : torch.Tensor
        ``(N, C, H, W)``.
    target : int or torch.Tensor
        Class per sample.
    abs : bool
        Absolute gradient (default, Simonyan et al. 2014) or signed.

    Returns
    -------
    torch.Tensor
        Same shape as ``inputs``.
    """
    from captum.attr import Saliency

    return Saliency(forward).attribute(inputs, target=target, abs=abs)


def guided_backprop(
    forward: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor
) -> torch.Tensor:
    """Guided backpropagation (captum; overrides the ``nn.ReLU`` modules of ``forward``).

    Parameters
    ----------
    forward : torch.nn.Module
        Maps ``inputs`` to logits; its ReLUs must be ``nn.ReLU`` modules, not in place
        (:func:`attribution_model`).
    inputs : torch.Tensor
        ``(N, C, H, W)``.
    target : int or torch.Tensor
        Class per sample.

    Returns
    -------
    torch.Tensor
        Signed attributions, same shape as ``inputs``.
    """
    from captum.attr import GuidedBackprop

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return GuidedBackprop(forward).attribute(inputs, target=target)


def guided_grad_cam(
    forward: nn.Module, layer: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor
) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop x bilinearly upsampled ReLU(Grad-CAM of ``layer``).

    Parameters
    ----------
    forward : torch.nn.Module
        As for :func:`guided_backprop`.
    layer : torch.nn.Module
        Grad-CAM layer inside ``forward`` (:func:`cam_layer`).
    inputs : torch.Tensor
        ``(N, C, H, W)``.
    target : int or torch.Tensor
        Class per sample.

    Returns
    -------
    torch.Tensor
        Same shape as ``inputs``.
    """
    from captum.attr import GuidedGradCam

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return GuidedGradCam(forward, layer).attribute(
            inputs, target=target, interpolate_mode="bilinear"
        )


def occlusion(
    forward: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    *,
    window: int = 6,
    stride: int = 1,
    baseline: float = 0.0,
    perturbations_per_eval: int = 1,
) -> torch.Tensor:
    """Occlusion sensitivity with a square window (captum ``Occlusion``).

    Parameters
    ----------
    forward : torch.nn.Module
        Maps ``inputs`` to logits.
    inputs : torch.Tensor
        ``(N, 1, H, W)`` patches.
    target : int or torch.Tensor
        Class per sample.
    window, stride : int
        Side and step of the occluding square, in input pixels.
    baseline : float
        Value written into the window.
    perturbations_per_eval : int
        Occluded copies per forward pass (speed only).

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``: mean drop of the target output over the windows covering each
        pixel (0 where no window fits when ``stride`` does not divide ``H - window``).
    """
    from captum.attr import Occlusion

    return Occlusion(forward).attribute(
        inputs, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
        baselines=baseline, target=target, perturbations_per_eval=perturbations_per_eval,
    )


def gradient_maps(
    model: nn.Module,
    patches: np.ndarray,
    method: str,
    targets: np.ndarray,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
    **options,
) -> np.ndarray:
    """Attribution maps of one gradient/perturbation method for a stack of patches.

    Parameters
    ----------
    model : Classifier
        Not modified (a private copy is attributed, see :func:`attribution_model`).
    patches : ndarray, shape (N, H, W)
        Float32 patches in [0, 1].
    method : str
        One of :data:`GRADIENT_METHODS`.
    targets : ndarray of int, shape (N,)
        Class explained per cell.
    batch_size : int, optional
        Cells per backward pass (default 64); for ``occlusion`` the occluded copies per
        forward pass (default 512), one cell at a time.
    progress : Progress, optional
        Checked for cancellation and told ``(done, N)`` after every batch.
    **options
        ``saliency``: ``abs``; ``gradcam``: ``relu``; ``occlusion``: ``window``,
        ``stride``, ``baseline``.

    Returns
    -------
    ndarray of float32, shape (N, H, W)
        One map per cell at patch resolution.

    Raises
    ------
    NotApplicable
        Grad-CAM methods on LeNet5.
    """
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; choose one of {GRADIENT_METHODS}")
    net = attribution_model(model)
    layer = cam_layer(net.model) if method in CAM_METHODS else None
    device = next(net.parameters(), torch.zeros(0)).device
    n, h, w = patches.shape
    if method == "occlusion":
        step, ppe = 1, batch_size or 512
    else:
        step, ppe = batch_size or 64, 1
    maps = np.zeros((n, h, w), dtype=np.float32)
    for i in range(0, n, step):
        checkpoint(progress)
        x = torch.from_numpy(np.ascontiguousarray(patches[i:i + step], dtype=np.float32))
        x = x.to(device)[:, None]
        if method != "occlusion":
            x.requires_grad_(True)  # captum would warn and set it itself
        t = torch.as_tensor(np.asarray(targets[i:i + step]), dtype=torch.int64, device=device)
        if method == "saliency":
            attr = saliency(net, x, t, **options)
        elif method == "guided-backprop":
            attr = guided_backprop(net, x, t, **options)
        elif method == "gradcam":
            assert layer is not None  # CAM methods always get their layer above
            attr = grad_cam(net, layer, x, t, size=(h, w), **options)
        elif method == "guided-gradcam":
            assert layer is not None
            attr = guided_grad_cam(net, layer, x, t, **options)
        else:
            attr = occlusion(net, x, t, perturbations_per_eval=ppe, **options)
        maps[i:i + step] = attr[:, 0].detach().float().cpu().numpy()
        if progress is not None:
            progress.set_progress(min(i + step, n), n)
    return maps
