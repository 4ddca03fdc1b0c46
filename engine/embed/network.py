"""The embedding network of paper 2 (§III-F): a CNN backbone and a 256-d linear head.

Paper 2 uses an ImageNet-pretrained DenseNet-121 whose classifier is replaced by dropout
(p = 0.05) and ``Linear(features, 256)``. Here every backbone starts from **random weights**:
nothing is downloaded at run time (``weights=None``), so results trained here are not the
paper's pretrained setting. ``"small"`` is a compact CNN for CPU work.

Input is a batch of patches: RGB ``uint8`` ``(N, S, S, 3)`` (stained smears), or float
``(N, S, S)`` in [0, 1] (normalised phase, replicated to three channels so every backbone
takes both), or float ``(N, S, S, 3)`` in [0, 1]. :meth:`EmbeddingNet.preprocess` scales to
[0, 1], resizes to ``input_size`` (bilinear, antialiased) and standardises with the ImageNet
channel statistics (kept so that pretrained weights could be dropped in later).
The embedding is the raw head output (not L2-normalised): the triplet loss normalises
internally, interventions and the SVM work on the raw vectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hemalens.engine.jobs import Progress, checkpoint

__all__ = ["BACKBONES", "EmbeddingNet", "EmbeddingSpec", "build_embedding_net"]

BACKBONES = ("densenet121", "resnet18", "small")
#: Smallest input each backbone accepts (five stride-2 stages leave at least 1 px).
MIN_INPUT = {"densenet121": 32, "resnet18": 32, "small": 16}
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EmbeddingSpec:
    """Architecture of an embedding network (stored as JSON beside its weights).

    Attributes
    ----------
    backbone : str
        ``"densenet121"`` (paper 2), ``"resnet18"`` or ``"small"`` (CPU).
    dim : int
        Embedding length (paper: 256).
    input_size : int
        Side of the square network input; patches are resized to it.
    dropout : float
        Dropout before the embedding layer (paper: 0.05).

    Raises
    ------
    ValueError
        A field out of range (the message names it).
    """

    backbone: str = "small"
    dim: int = 256
    input_size: int = 64
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        for key in ("dim", "input_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{key} must be an integer, got {v!r}")
        if self.dim < 2:
            raise ValueError(f"dim must be >= 2, got {self.dim}")
        if self.input_size < MIN_INPUT[self.backbone]:
            raise ValueError(
                f"input_size must be >= {MIN_INPUT[self.backbone]} for {self.backbone}, "
                f"got {self.input_size}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict."""
        d = asdict(self)
        d.update(dim=int(self.dim), input_size=int(self.input_size), dropout=float(self.dropout))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingSpec:
        """Build a spec from :meth:`to_dict` output (unknown keys are an error).

        Parameters
        ----------
        d : dict
            The fields.

        Returns
        -------
        EmbeddingSpec
            The validated spec.
        """
        unknown = sorted(set(d) - {"backbone", "dim", "input_size", "dropout"})
        if unknown:
            raise ValueError(f"unknown embedding spec fields {unknown}")
        return cls(**d)


def _small_backbone() -> tuple[nn.Module, int]:
    """Four conv blocks (conv-BN-ReLU, 2x2 max-pool) and global average pooling: 128 features."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (16, 32, 64, 128):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), c_in


def _torchvision_backbone(name: str) -> tuple[nn.Module, int]:
    from hemalens.engine.models.spec import import_torchvision

    torchvision = import_torchvision(name, "--backbone small")

    if name == "densenet121":
        net = torchvision.models.densenet121(weights=None)  # random init: nothing downloads
        n = net.classifier.in_features
        net.classifier = nn.Identity()
    else:
        net = torchvision.models.resnet18(weights=None)
        n = net.fc.in_features
        net.fc = nn.Identity()
    return net, int(n)


class EmbeddingNet(nn.Module):
    """Backbone without its classifier, dropout, and ``Linear(features, dim)``.

    Parameters
    ----------
    spec : EmbeddingSpec
        Backbone, embedding length, input size and dropout.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, spec: EmbeddingSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.backbone == "small":
            self.backbone, n_feat = _small_backbone()
        else:
            self.backbone, n_feat = _torchvision_backbone(spec.backbone)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(n_feat, spec.dim)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, patches: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Turn raw patches into standardised network input ``(N, 3, s, s)`` float32.

        Parameters
        ----------
        patches : torch.Tensor or numpy.ndarray
            ``(N, S, S, 3)`` uint8 RGB, ``(N, S, S, 3)`` float in [0, 1], or ``(N, S, S)``
            float in [0, 1] (grey/phase, replicated to three channels).

        Returns
        -------
        torch.Tensor
            On the module's device, resized to ``input_size`` and standardised.

        Raises
        ------
        ValueError
            Any other shape or dtype.
        """
        x = torch.as_tensor(patches).to(self.head.weight.device)
        if x.ndim == 3 and x.dtype != torch.uint8:
            x = x.unsqueeze(-1).expand(*x.shape, 3)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"patches must be (N, S, S, 3) RGB or (N, S, S) grey, got {tuple(x.shape)}"
            )
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float()
        else:
            raise ValueError(f"patches must be uint8 or float, got {x.dtype}")
        x = x.permute(0, 3, 1, 2)
        s = int(self.spec.input_size)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed input ``(N, 3, s, s)`` -> ``(N, dim)``."""
        return self.head(self.dropout(self.backbone(x)))

    @torch.no_grad()
    def embed(
        self,
        patches: np.ndarray,
        batch_size: int = 256,
        *,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Embed patches in eval mode (no dropout, BatchNorm running statistics).

        The module's train/eval mode is restored afterwards.

        Parameters
        ----------
        patches : numpy.ndarray
            As for :meth:`preprocess`.
        batch_size : int
            Patches per forward pass.
        progress : Progress, optional
            Cancellation is checked before every batch.

        Returns
        -------
        numpy.ndarray
            ``(N, dim)`` float32.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        self.eval()
        out = np.empty((len(patches), self.spec.dim), np.float32)
        try:
            for s in range(0, len(patches), batch_size):
                checkpoint(progress)
                xb = self.preprocess(np.asarray(patches[s : s + batch_size]))
                out[s : s + len(xb)] = self(xb).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out


def build_embedding_net(spec: EmbeddingSpec) -> EmbeddingNet:
    """Create an :class:`EmbeddingNet` with random weights (uses the global torch RNG).

    Parameters
    ----------
    spec : EmbeddingSpec
        The architecture.

    Returns
    -------
    EmbeddingNet
        In training mode, on the CPU.
    """
    return EmbeddingNet(spec)
