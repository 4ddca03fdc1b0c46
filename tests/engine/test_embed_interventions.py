"""Automatic latent interventions: each transform, criterion, composition, renormalisation, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemalens.engine.embed.interventions import (
    ClassTransforms,
    InterventionParams,
    check_embedding,
    choose_cluster,
    class_weights,
    compute_interventions,
    contraction,
    intervention_loss,
    intervention_step,
    iter_interventions,
    renormalise_shifts,
    rotation_matrix,
    shift_vector,
)


def _angle(a, b):
    return np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))


def _clusters(centres, spreads, n=40, seed=0):
    rng = np.random.default_rng(seed)
    d = len(centres[0])
    X = np.concatenate(
        [np.asarray(c) + s * rng.normal(size=(n, d)) for c, s in zip(centres, spreads, strict=True)]
    )
    y = np.repeat(np.arange(len(centres)), n)
    return X, y


def _blobs(k=5, d=8, n=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = np.repeat(np.arange(k), n)
    X = centres[y] + 0.4 * rng.normal(size=(k * n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


# ---------------------------------------------------------------- parameters


def test_params_validate_and_round_trip():
    p = InterventionParams(types=("r", "c", "s"), lambda_s=4, neighbours=np.int64(3))
    assert p.types == ("c", "s", "r")  # canonical order
    assert p.lambda_s == 4.0 and isinstance(p.neighbours, int)
    assert InterventionParams.from_dict(p.to_dict()) == p
    assert p.effective_gamma == 1.0
    assert InterventionParams(types=("os",)).effective_gamma == 0.0
    assert InterventionParams(types=("s", "os"), gamma=0.25).effective_gamma == 0.25
    for bad in (
        {"types": ()},
        {"types": ("x",)},
        {"types": ("c", "c")},
        {"types": ("c",), "lambda_c": 1.0},
        {"types": ("c",), "lambda_r": -0.1},
        {"types": ("c",), "gamma": 1.5},
        {"types": ("c",), "lambda_s": float("nan")},
        {"types": ("c",), "criterion": "max"},
        {"types": ("c",), "neighbours": 0},
        {"types": ("c",), "neighbours": 2.5},
    ):
        with pytest.raises(ValueError) as err:
            InterventionParams(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown"):
        InterventionParams.from_dict({"types": ["c"], "alpha": 0.8})


# ---------------------------------------------------------------- transforms


def test_contraction_shrinks_spread_by_exactly_one_minus_lambda():
    X, _ = _clusters([[1.0, 2.0, 3.0]], [0.7], n=50)
    R, T = contraction(X, 0.25)
    Xc = X @ R.T + T
    np.testing.assert_allclose(Xc.mean(0), X.mean(0), atol=1e-12)  # centre stays
    ratio = np.linalg.norm(Xc - X.mean(0), axis=1) / np.linalg.norm(X - X.mean(0), axis=1)
    np.testing.assert_allclose(ratio, 0.75, rtol=1e-12)  # every point, not just on average
    np.testing.assert_allclose(Xc, X + 0.25 * (X.mean(0) - X), atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.32, 0.7, 1.0])
def test_rotation_matrix_orthonormal_and_turns_away(lam):
    rng = np.random.default_rng(1)
    v_i, v_j = rng.normal(size=6), rng.normal(size=6)
    R = rotation_matrix(v_i, v_j, lam)
    np.testing.assert_allclose(R.T @ R, np.eye(6), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    beta = _angle(v_i, v_j)
    # the angle to the neighbour grows linearly from β (λ=0) to π (λ=1)
    assert _angle(R @ v_i, v_j) == pytest.approx(beta + lam * (np.pi - beta), abs=1e-9)
    assert np.linalg.norm(R @ v_i) == pytest.approx(np.linalg.norm(v_i))
    # directions orthogonal to the plane of v_i and v_j are untouched
    Q, _ = np.linalg.qr(np.column_stack([v_i, v_j, rng.normal(size=(6, 4))]))
    np.testing.assert_allclose(R @ Q[:, 2:], Q[:, 2:], atol=1e-12)


def test_rotation_lambda_one_maps_c1_onto_minus_c2():
    v1, v2 = np.array([2.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    out = rotation_matrix(v1, v2, 1.0) @ v1
    np.testing.assert_allclose(out / np.linalg.norm(out), -v2 / np.linalg.norm(v2), atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(v1, 3 * v1, 0.5), np.eye(3))  # undefined plane


def test_shift_moves_cluster_away_from_nearest_centre():
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-4.0, -4.0]])
    v = shift_vector(centres, 0, 3, gamma=1.0, lambda_s=2.0, std_c=0.1)
    assert np.linalg.norm(v) == pytest.approx(0.2)  # λ_s · std
    moved = centres.copy()
    moved[0] += v
    before = np.linalg.norm(centres[1:] - centres[0], axis=1).min()
    after = np.linalg.norm(moved[1:] - moved[0], axis=1).min()
    assert after > before
    # inverse-distance weights: the nearest neighbour (x = 1) dominates -> mostly along -x
    manual = sum((centres[0] - c) / np.sum((centres[0] - c) ** 2) for c in centres[1:])
    np.testing.assert_allclose(v, 0.2 * manual / np.linalg.norm(manual), atol=1e-12)


def test_ortho_shift_is_orthogonal_to_the_neighbour_line_and_points_to_the_cluster():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 5))
    v = shift_vector(centres, 0, np.array([1, 2]), gamma=0.0, lambda_s=1.0, std_c=1.0)
    line = centres[2] - centres[1]
    assert abs(v @ line) < 1e-12 * np.linalg.norm(line)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    # it points from the line towards c̄ (moving along it increases the distance to the line)
    t = (centres[0] - centres[1]) @ line / (line @ line)
    foot = centres[1] + t * line
    np.testing.assert_allclose(v, (centres[0] - foot) / np.linalg.norm(centres[0] - foot))
    # one neighbour: no line, so an ortho-only shift does nothing
    assert not np.any(shift_vector(centres, 0, 1, gamma=0.0, lambda_s=1.0, std_c=1.0))


# ---------------------------------------------------------------- criterion


def _hand_logits(X, y):
    k = y.max() + 1
    C = np.array([X[y == c].mean(0) for c in range(k)])
    std = np.array([np.sqrt(np.mean((X[y == c] - C[c]) ** 2)) for c in range(k)])
    D = np.linalg.norm(C[:, None] - C[None], axis=2)
    dmin = np.array([np.min(np.delete(D[i], i)) for i in range(k)])
    dall = np.array([np.mean(np.delete(D[i], i)) for i in range(k)])
    return {
        "nearest": 1 / dmin,
        "mean-std": std / dmin,
        "mean-all": 1 / dall,
        "mean-std*mean-all": std / dmin / dall,
    }


def test_deterministic_criteria_on_constructed_clusters():
    # 1 and 2 are the closest pair; 2 is wider; 3 sits in the middle of everything
    X, y = _clusters(
        [[0, 0], [10, 0], [11, 0], [4, 5], [-9, 9]], [0.3, 0.2, 0.6, 0.3, 0.3], n=60, seed=3
    )
    pick = {
        c: choose_cluster(X, y, InterventionParams(types=("c",), criterion=c))
        for c in ("nearest", "mean-std", "mean-all", "mean-std*mean-all")
    }
    assert pick["nearest"] == 1  # tie within the closest pair goes to the lower code
    assert pick["mean-std"] == 2  # same neighbour distance, larger spread: the tight-neighbour
    assert pick["mean-std*mean-all"] == 2  # cluster that overlaps its neighbour most
    assert pick["mean-all"] == 3  # closest to all others on average
    hand = _hand_logits(X, y)
    for crit, c in pick.items():
        assert c == int(np.argmax(hand[crit]))


def test_probabilistic_frequencies_match_the_normalised_product():
    X, y = _clusters([[0, 0], [3, 0], [3.5, 1], [0, 6]], [0.5, 0.4, 0.8, 0.3], n=30, seed=4)
    p = _hand_logits(X, y)["mean-std*mean-all"]
    p = p / p.sum()
    params = InterventionParams(types=("c",), probabilistic=True)
    rng = np.random.default_rng(5)
    n = 3000
    draws = np.array([choose_cluster(X, y, params, rng) for _ in range(n)])
    freq = np.bincount(draws, minlength=4) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 4.5 * sigma), (freq, p)


# ---------------------------------------------------------------- iterations


def test_composition_equals_applying_steps_one_by_one():
    X, y = _blobs()
    params = InterventionParams(types=("c", "s", "os", "r"), lambda_s=2.0, neighbours=3)
    tf = compute_interventions(X, y, params, 8, renormalise="off")
    cur = X.copy()
    for _ in range(8):
        c, R, T = intervention_step(cur, y, params)
        cur[y == c] = cur[y == c] @ R.T + T
    np.testing.assert_allclose(tf.apply(X, y), cur, atol=1e-10)
    # the iterator's lazily kept embedding is the same
    for st in iter_interventions(X, y, params, 8, renormalise="scale"):
        emb = st.embedding()
        np.testing.assert_allclose(emb, st.transforms.apply(X, y), atol=1e-10)


def test_compose_update_rule():
    rng = np.random.default_rng(6)
    tf = ClassTransforms.identity(2, 3)
    x = rng.normal(size=(4, 3))
    steps = [(rng.normal(size=(3, 3)), rng.normal(size=3)) for _ in range(3)]
    expect = x.copy()
    for R, T in steps:
        tf.compose(1, R, T)
        expect = expect @ R.T + T
    y = np.ones(4, dtype=int)
    np.testing.assert_allclose(tf.apply(x, y), expect, atol=1e-12)
    np.testing.assert_allclose(tf.apply(x, 0 * y), x)  # class 0 untouched
    back = ClassTransforms.from_arrays(tf.to_arrays())
    np.testing.assert_array_equal(back.R, tf.R)
    with pytest.raises(ValueError):
        ClassTransforms(np.zeros((2, 3, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("types", [("s",), ("c", "s"), ("c", "s", "os", "r"), ("os",)])
def test_scale_renormalisation_preserves_the_rms_norm(types):
    X, y = _blobs(seed=7)
    X = 3.0 * X  # norm 3, not 1
    rms = np.sqrt(np.mean(np.sum(X**2, 1)))
    params = InterventionParams(types=types, lambda_s=4.0, neighbours=3)
    for st in iter_interventions(X, y, params, 6):
        out = st.embedding()
        assert np.sqrt(np.mean(np.sum(out**2, 1))) == pytest.approx(rms, rel=1e-12)
    off = compute_interventions(X, y, params, 6, renormalise="off").apply(X, y)
    assert np.sqrt(np.mean(np.sum(off**2, 1))) != pytest.approx(rms, rel=1e-3)


def test_shift_only_renormalisation_rule():
    X, y = _blobs(seed=8)
    X = X + 0.5  # off-centre, so inward shifts exist
    params = InterventionParams(types=("c", "s"), lambda_c=0.3, lambda_s=2.0, neighbours=2)
    target = np.mean(np.sum(X**2, 1))
    for st in iter_interventions(X, y, params, 5, renormalise="shifts"):
        out = st.embedding()
        if st.scale > 0:  # a root existed: the norm is exact
            assert np.mean(np.sum(out**2, 1)) == pytest.approx(target, rel=1e-10)
    # direct: the factor solves the quadratic
    rng = np.random.default_rng(9)
    Y, S = rng.normal(size=(30, 4)), rng.normal(size=(3, 4))
    yy = np.repeat(np.arange(3), 10)
    target = np.mean(np.sum(Y**2, 1)) + 3.0  # above the shift-free norm: one root > 0
    s = renormalise_shifts(Y, yy, S, target_sq=target)
    assert s > 0
    assert np.mean(np.sum((Y + s * S[yy]) ** 2, 1)) == pytest.approx(target)
    # on the unit sphere, the literal rule cancels an outward shift: why "scale" is default
    Xs, ys = _blobs(seed=10)
    out = compute_interventions(
        Xs, ys, InterventionParams(types=("s",)), 1, renormalise="shifts"
    ).apply(Xs, ys)
    np.testing.assert_allclose(out, Xs, atol=1e-12)


def test_interventions_separate_overlapping_clusters_and_are_seeded():
    X, y = _blobs(k=4, d=6, seed=11)
    params = InterventionParams(types=("c", "s"), probabilistic=True, neighbours=2)
    a = compute_interventions(X, y, params, 10, rng=3)
    b = compute_interventions(X, y, params, 10, rng=3)
    np.testing.assert_array_equal(a.T, b.T)
    out = a.apply(X, y)

    def ratio(Z):  # mean within-class spread / mean centre distance
        C = np.array([Z[y == c].mean(0) for c in range(4)])
        within = np.mean([np.linalg.norm(Z[y == c] - C[c], axis=1).mean() for c in range(4)])
        between = np.mean(np.linalg.norm(C[:, None] - C[None], axis=2)[np.triu_indices(4, 1)])
        return within / between

    assert ratio(out) < 0.5 * ratio(X)
    # classes without samples are only scaled by the renormalisation (no rotation or shift)
    tf = compute_interventions(X, y, params, 3, n_classes=6)
    np.testing.assert_allclose(tf.R[5], tf.R[5, 0, 0] * np.eye(6))
    assert not np.any(tf.T[5])


def test_bad_inputs_raise_one_line_value_errors():
    X, y = _blobs(k=3, n=5)
    Xnan = X.copy()
    Xnan[2, 1] = np.nan
    y1 = y.copy()
    y1[0] = 7  # class 7 has a single sample
    cases = [
        ((X, np.zeros_like(y)), "two classes"),
        ((X, y1), "single sample"),
        ((Xnan, y), "NaN"),
        ((X[:, 0], y), "(N, d)"),
        ((X, y[:-1]), "shape"),
        ((X, y.astype(float)), "integer"),
    ]
    p = InterventionParams(types=("c",))
    for args, msg in cases:
        for fn in (check_embedding, lambda a, b: compute_interventions(a, b, p, 2)):
            with pytest.raises(ValueError) as err:
                fn(*args)
            assert msg in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError):
        compute_interventions(X, y, p, -1)
    with pytest.raises(ValueError):
        compute_interventions(X, y, p, 2, renormalise="maybe")


# ---------------------------------------------------------------- class weights and loss


def test_class_weights_inverse_frequency():
    y = np.array([0] * 6 + [1] * 3 + [3] * 1)  # class 2 absent
    w = class_weights(y, 4)
    # N / (|M| N_c) with |M| = 3 present classes
    np.testing.assert_allclose(w, [10 / 18, 10 / 9, 0.0, 10 / 3])
    assert np.sum(w[y]) == pytest.approx(y.size)  # mean weight over samples is 1
    with pytest.raises(ValueError):
        class_weights(np.array([0, 5]), 3)


def test_intervention_loss_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 2, 2, 2])
    w = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    loss = intervention_loss(emb, target, y, w)
    manual = sum(w[y[i]] * (emb[i] - target[i]).abs().sum() for i in range(6)) / 6
    assert loss.item() == pytest.approx(manual.item())
    loss.backward()
    expect = (w[y][:, None] * torch.sign(emb - target) / 6).detach()
    torch.testing.assert_close(emb.grad, expect)
    assert target.grad is None  # the target is a constant
    plain = intervention_loss(emb, target, y)
    ref = torch.nn.functional.l1_loss(emb, target, reduction="sum") / 6
    assert plain.item() == pytest.approx(ref.item())
    with pytest.raises(ValueError):
        intervention_loss(emb, target[:3], y)
