"""Embedding network, triplet loss and augmentation of paper 2 (issue 5, section 2)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners

from hemalens.engine.embed.augment import border_fill, crop_offset, random_view
from hemalens.engine.embed.network import EmbeddingNet, EmbeddingSpec, build_embedding_net
from hemalens.engine.embed.triplet import TripletLoss


# -- network ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "vgg"}, "unknown backbone"),
        ({"dim": 1}, "dim must be >= 2"),
        ({"input_size": 8}, "input_size must be >= 16"),
        ({"backbone": "resnet18", "input_size": 16}, "input_size must be >= 32"),
        ({"dropout": 1.0}, "dropout"),
        ({"dim": 2.5}, "dim must be an integer"),
    ],
)
def test_spec_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingSpec(**kwargs)


def test_spec_json_round_trip():
    spec = EmbeddingSpec("resnet18", dim=128, input_size=96, dropout=0.1)
    d = json.loads(json.dumps(spec.to_dict()))
    assert EmbeddingSpec.from_dict(d) == spec
    with pytest.raises(ValueError, match="unknown embedding spec fields"):
        EmbeddingSpec.from_dict({**d, "pretrained": True})


@pytest.mark.parametrize("backbone", ["densenet121", "resnet18"])
def test_large_backbones_embed_two_patches_at_64(backbone):
    torch.manual_seed(0)
    net = build_embedding_net(EmbeddingSpec(backbone, input_size=64))
    # classifier removed: the head takes the backbone's feature width
    width = 1024 if backbone == "densenet121" else 512
    assert net.head.in_features == width
    patches = np.random.default_rng(0).integers(0, 256, (2, 50, 50, 3), dtype=np.uint8)
    emb = net.embed(patches)
    assert emb.shape == (2, 256) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert net.training  # embed() restores the mode it found


def test_preprocess_scales_resizes_and_takes_grey():
    torch.manual_seed(0)
    net = EmbeddingNet(EmbeddingSpec("small", input_size=32))
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    a = net.preprocess(rgb)
    b = net.preprocess(rgb.astype(np.float32) / 255)
    assert a.shape == (3, 3, 32, 32)
    torch.testing.assert_close(a, b)
    # standardised with the ImageNet statistics: mid-grey 0.5 -> (0.5 - mean) / std
    grey = np.full((1, 32, 32), 0.5, np.float32)
    g = net.preprocess(grey)
    want = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(g[0, :, 5, 5], want)
    # a grey patch equals the RGB patch with three equal channels
    grey = rng.random((2, 32, 32)).astype(np.float32)
    rgb3 = np.repeat(grey[..., None], 3, -1)
    torch.testing.assert_close(net.preprocess(grey), net.preprocess(rgb3))
    with pytest.raises(ValueError, match="patches must be"):
        net.preprocess(np.zeros((2, 32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 or float"):
        net.preprocess(np.zeros((2, 32, 32, 3), np.int32))


def test_embed_is_eval_mode_and_batch_independent():
    torch.manual_seed(0)
    net = EmbeddingNet(EmbeddingSpec("small", input_size=32, dropout=0.5))
    x = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    e1 = net.embed(x, batch_size=5)
    e2 = net.embed(x, batch_size=2)  # BatchNorm running stats, no dropout: rows independent
    np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-5)


# -- triplet loss ----------------------------------------------------------------------
def _own_triplets(emb: torch.Tensor, y: torch.Tensor, margin: float, mining: str):
    """Enumerate every (a, p, n) by hand and keep the ones the mining rule asks for."""
    e = torch.nn.functional.normalize(emb.double(), dim=1)
    out = []
    for a, p, n in itertools.product(range(len(y)), repeat=3):
        if a == p or y[a] != y[p] or y[n] == y[a]:
            continue
        gap = float((e[a] - e[n]).norm() - (e[a] - e[p]).norm())  # d_an - d_ap
        keep = {
            "all": gap <= margin,
            "hard": gap <= 0,
            "semihard": 0 < gap <= margin,
            "easy": gap > margin,
        }[mining]
        if keep:
            out.append((a, p, n, max(margin - gap, 0.0)))
    return out


@pytest.mark.parametrize("mining", ["all", "hard", "semihard", "easy"])
def test_triplet_loss_equals_direct_computation_and_library(mining):
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(14, 6, generator=g)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    margin = 0.3  # large enough that every mining type finds triplets in random data
    tl = TripletLoss(margin, mining)
    loss = tl(emb, y)
    own = _own_triplets(emb, y, margin, mining)
    mined = set(zip(*(t.tolist() for t in tl.mine(emb, y)), strict=True))
    assert mined == {(a, p, n) for a, p, n, _ in own}
    assert tl.last_triplets == len(own)
    nonzero = [v for *_, v in own if v > 0]
    want = float(np.mean(nonzero)) if nonzero else 0.0  # average of the non-zero triplets
    assert float(loss) == pytest.approx(want, rel=1e-5, abs=1e-7)
    lib = losses.TripletMarginLoss(margin=margin)(
        emb, y, miners.TripletMarginMiner(margin=margin, type_of_triplets=mining)(emb, y)
    )
    assert float(loss) == pytest.approx(float(lib), rel=1e-6, abs=1e-8)


def test_all_mining_equals_library_without_miner():
    # "all" keeps exactly the margin violators, and the non-zero average ignores the rest
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(12, 5, generator=g)
    y = torch.arange(12) % 3
    ours = TripletLoss(0.05, "all")(emb, y)
    lib = losses.TripletMarginLoss(margin=0.05)(emb, y)
    assert float(ours) == pytest.approx(float(lib), rel=1e-6)


def test_triplet_loss_zero_when_margin_satisfied_and_has_gradient():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    noise = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    emb = torch.eye(3)[y] * 5 + 0.001 * noise
    emb.requires_grad_(True)
    tl = TripletLoss(0.05, "all")
    loss = tl(emb, y)
    assert float(loss.detach()) == 0.0 and tl.last_triplets == 0
    loss.backward()  # still attached to the graph
    assert emb.grad is not None and float(emb.grad.abs().sum()) == 0.0
    # scale-free: L2-normalised embeddings, so scaling them changes nothing
    e2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert float(tl(e2, y)) == pytest.approx(float(tl(10 * e2, y)), rel=1e-5)
    bad = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    tl(bad, y).backward()
    assert float(bad.grad.abs().sum()) > 0


def test_triplet_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown mining"):
        TripletLoss(mining="random")
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


# -- augmentation ----------------------------------------------------------------------
def test_crop_offset_scales_the_papers_11_px():
    assert crop_offset(224) == 11
    assert crop_offset(96) == 5
    assert crop_offset(64) == 3


def _disk(n=2, size=33, bg=0.7, fg=0.1, r=8):
    yy, xx = np.mgrid[:size, :size] - size // 2
    img = np.where(xx**2 + yy**2 <= r**2, fg, bg).astype(np.float32)
    return torch.from_numpy(np.broadcast_to(img, (n, 3, size, size)).copy())


def test_identity_view_and_flips_are_exact():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same = random_view(x, np.random.default_rng(0), max_offset=0, rotate=False, flip=False)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)
    flipped = random_view(x, np.random.default_rng(1), max_offset=0, rotate=False, flip=True)
    for i in range(4):
        ok = [torch.allclose(flipped[i], v, atol=1e-5) for v in (x[i], x[i].flip(-1))]
        assert any(ok)


def test_crop_offset_moves_by_whole_pixels_within_bound():
    x = torch.zeros(20, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = random_view(x, np.random.default_rng(5), max_offset=3, rotate=False, flip=False)
    moves = set()
    for img in out[:, 0]:
        r, c = divmod(int(img.argmax()), 21)
        assert float(img.max()) == pytest.approx(1.0, abs=1e-5)  # integer shift: no blur
        assert abs(r - 10) <= 3 and abs(c - 10) <= 3
        moves.add((r - 10, c - 10))
    assert len(moves) > 5  # offsets actually vary


def test_rotation_fills_with_background_and_keeps_a_centred_disk():
    x = _disk()
    assert torch.allclose(border_fill(x), torch.full((2, 3, 1, 1), 0.7))
    out = random_view(x, np.random.default_rng(7), max_offset=0)
    # corners come from outside the patch: background, not zero
    torch.testing.assert_close(out[:, :, 0, 0], torch.full((2, 3), 0.7), rtol=0, atol=1e-5)
    # a centred disk is rotation invariant (up to interpolation at its rim)
    assert float((out - x).abs().mean()) < 0.02


def test_views_are_seeded():
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    a = random_view(x, np.random.default_rng(9), max_offset=2)
    b = random_view(x, np.random.default_rng(9), max_offset=2)
    c = random_view(x, np.random.default_rng(10), max_offset=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="needs"):
        random_view(torch.zeros(2, 3, 8, 9), np.random.default_rng(0), max_offset=1)
