"""Triplet margin loss with in-batch mining (paper 2, eq. 1: the TML term).

A thin wrapper over pytorch-metric-learning, with its defaults kept and stated:

* distance: Euclidean between **L2-normalised** embeddings (``LpDistance(p=2,
  normalize_embeddings=True)``), so the margin (0.05) lives on the unit sphere;
* loss per triplet: ``relu(d(a, p) - d(a, n) + margin)``;
* reduction: the mean over the triplets with a **non-zero** loss (``AvgNonZeroReducer``);
  0 when there is none (the result stays attached to the graph);
* mining (``TripletMarginMiner`` with the *same* margin): ``"all"`` = every triplet that
  violates the margin (paper 2: "all mined triplets in the batch that violate the margin";
  the default), ``"hard"`` = those whose negative is closer than the positive,
  ``"semihard"`` = violating ones whose negative is farther than the positive, ``"easy"`` =
  those that already satisfy the margin (their loss is 0 by definition: a diagnostic,
  not a training choice).

``torch.nn.TripletMarginLoss`` differs on every point above (no normalisation, mean over
all triplets, margin 1.0), so it is not used.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

__all__ = ["MINING", "TripletLoss"]

MINING = ("all", "hard", "semihard", "easy")


class TripletLoss(nn.Module):
    """Triplet margin loss over the triplets mined in a batch.

    Parameters
    ----------
    margin : float
        Margin between anchor-positive and anchor-negative distances (paper 2: 0.05 is the
        library default; distances are between unit vectors, so in [0, 2]).
    mining : {"all", "hard", "semihard", "easy"}
        Which triplets the miner keeps (see the module docstring).

    Attributes
    ----------
    last_triplets : int
        Number of triplets mined in the latest call.
    """

    def __init__(self, margin: float = 0.05, mining: str = "all") -> None:
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"unknown mining {mining!r}; choose one of {MINING}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining
        self.miner = miners.TripletMarginMiner(margin=self.margin, type_of_triplets=mining)
        self.loss = losses.TripletMarginLoss(margin=self.margin)
        self.last_triplets = 0

    def mine(
        self, emb: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the mined triplets as index tensors ``(anchor, positive, negative)``.

        Parameters
        ----------
        emb : torch.Tensor
            ``(B, d)`` embeddings (not normalised; the miner normalises).
        labels : torch.Tensor
            ``(B,)`` integer classes.

        Returns
        -------
        tuple of torch.Tensor
            Three ``(T,)`` long tensors of row indices.
        """
        a, p, n = self.miner(emb, labels)
        return a, p, n

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mine a batch and return the mean non-zero triplet loss (a scalar tensor).

        Parameters
        ----------
        emb : torch.Tensor
            ``(B, d)`` embeddings.
        labels : torch.Tensor
            ``(B,)`` integer classes.

        Returns
        -------
        torch.Tensor
            Scalar, differentiable with respect to ``emb``.
        """
        if emb.ndim != 2 or labels.shape != (emb.shape[0],):
            raise ValueError(
                f"embeddings (B, d) and labels (B,) expected, got {tuple(emb.shape)} and "
                f"{tuple(labels.shape)}"
            )
        triplets = self.mine(emb, labels)
        self.last_triplets = int(triplets[0].numel())
        return self.loss(emb, labels, triplets)
