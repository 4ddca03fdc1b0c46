"""Manual projective latent interventions: edit geometry, order, undo, file and loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hemalens.engine.embed.pli import PLIEdit, PLISession, load_targets, pli_loss
from hemalens.engine.errors import InputError

IDS = np.arange(100, 120)  # cell ids that are not row indices


@pytest.fixture
def session() -> PLISession:
    pts = np.random.default_rng(0).normal(size=(20, 2)) * 5
    return PLISession(pts, IDS)


def _rows(ids):
    return np.searchsorted(IDS, ids)


def test_shift_moves_only_the_selection_by_exactly_the_vector(session):
    sel = IDS[[1, 4, 7]]
    session.add(PLIEdit(sel, "shift", vector=(2.5, -1.0)))
    t, mask = session.targets()
    moved = t[_rows(sel)] - session.points[_rows(sel)]
    np.testing.assert_allclose(moved, [[2.5, -1.0]] * 3, rtol=0, atol=1e-12)
    others = np.setdiff1d(np.arange(20), _rows(sel))
    np.testing.assert_array_equal(t[others], session.points[others])
    assert mask.sum() == 3 and mask[_rows(sel)].all()


def test_contract_shrinks_spread_by_one_minus_factor_about_centre(session):
    sel = IDS[:8]
    r = _rows(sel)
    session.add(PLIEdit(sel, "contract", factor=0.25))
    t, _ = session.targets()
    c0 = session.points[r].mean(axis=0)
    np.testing.assert_allclose(t[r].mean(axis=0), c0, atol=1e-12)
    np.testing.assert_allclose(t[r] - c0, 0.75 * (session.points[r] - c0), atol=1e-12)
    session.add(PLIEdit(sel, "contract", factor=1.0))
    t, _ = session.targets()
    np.testing.assert_allclose(t[r], np.broadcast_to(c0, (8, 2)), atol=1e-12)


def test_rotate_preserves_distances_to_centre_and_turns_by_angle(session):
    sel = IDS[5:12]
    r = _rows(sel)
    session.add(PLIEdit(sel, "rotate", angle=math.pi / 2))
    t, _ = session.targets()
    c = session.points[r].mean(axis=0)
    before, after = session.points[r] - c, t[r] - c
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), np.linalg.norm(before, axis=1))
    # counter-clockwise quarter turn: (x, y) -> (-y, x)
    np.testing.assert_allclose(after, np.c_[-before[:, 1], before[:, 0]], atol=1e-12)


def test_edits_apply_in_order_to_current_positions(session):
    a, b = IDS[:6], IDS[3:10]  # overlapping selections
    shift, contract = PLIEdit(a, "shift", vector=(10, 0)), PLIEdit(b, "contract", factor=0.5)
    session.add(shift)
    session.add(contract)
    t, _ = session.targets()
    expect = np.array(session.points)
    expect[_rows(a)] += (10, 0)
    cb = expect[_rows(b)].mean(axis=0)  # centre of the *shifted* selection
    expect[_rows(b)] = cb + 0.5 * (expect[_rows(b)] - cb)
    np.testing.assert_allclose(t, expect, atol=1e-12)
    other = PLISession(session.points, IDS)
    other.add(contract)
    other.add(shift)
    assert not np.allclose(other.targets()[0], t)  # order matters


def test_undo_and_mask_marks_only_moved_cells(session):
    session.add(PLIEdit(IDS[:3], "shift", vector=(1, 1)))
    session.add(PLIEdit(IDS[10:], "contract", factor=0.0))  # identity: moves nothing
    t, mask = session.targets()
    assert mask.sum() == 3
    assert session.undo() == PLIEdit(IDS[10:], "contract", factor=0.0)
    assert session.undo().kind == "shift"
    assert session.undo() is None and session.edits == ()
    t, mask = session.targets()
    np.testing.assert_array_equal(t, session.points)
    assert not mask.any()


def test_edit_validation():
    with pytest.raises(ValueError, match="kind"):
        PLIEdit([1], "zoom")
    with pytest.raises(ValueError, match="non-empty"):
        PLIEdit([], "shift", vector=(1, 0))
    with pytest.raises(ValueError, match="factor"):
        PLIEdit([1], "contract", factor=1.5)
    with pytest.raises(ValueError, match="vector"):
        PLIEdit([1], "shift", vector=(1, np.nan))
    with pytest.raises(ValueError, match="angle"):
        PLIEdit([1], "rotate", angle=np.inf)
    with pytest.raises(ValueError, match="not in the map"):
        PLISession(np.zeros((3, 2))).add(PLIEdit([7], "shift", vector=(1, 0)))
    e = PLIEdit([3, 1, 3], "rotate", angle=0.3)
    assert e.cells.tolist() == [1, 3] and not e.cells.flags.writeable
    assert PLIEdit.from_dict(e.to_dict()) == e
    with pytest.raises(ValueError, match="needs 'angle'"):
        PLIEdit.from_dict({"kind": "rotate", "cells": [1]})


def test_json_round_trip(session, tmp_path):
    session.add(PLIEdit(IDS[:5], "shift", vector=(1.5, 2)))
    session.add(PLIEdit(IDS[2:9], "rotate", angle=0.7))
    session.add(PLIEdit(IDS[4:6], "contract", factor=0.3))
    path = tmp_path / "pli.json"
    session.save(path)
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["cell_ids"] == IDS.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["pli.json"]  # no temporary left over
    back = PLISession.load(path)
    assert back.edits == session.edits
    np.testing.assert_array_equal(back.cell_ids, IDS)
    for a, b in zip(back.targets(), session.targets(), strict=True):
        np.testing.assert_array_equal(a, b)
    ids, targets, mask = load_targets(path)
    np.testing.assert_array_equal(ids, IDS)
    np.testing.assert_array_equal(targets, session.targets()[0])
    assert mask.sum() == 9


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        ('{"version": 1, "cells": []}', "not a HemaLens PLI targets file"),
        ("[1, 2]", "not a HemaLens PLI targets file"),
    ],
)
def test_corrupt_or_foreign_file_names_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=reason) as info:
        PLISession.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_altered_or_newer_file_is_refused(session, tmp_path):
    session.add(PLIEdit(IDS[:2], "shift", vector=(1, 0)))
    path = tmp_path / "pli.json"
    session.save(path)
    doc = json.loads(path.read_text())
    doc["targets"][0][0] += 3.0
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="do not match"):
        load_targets(path)
    doc["version"] = 2
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="version"):
        load_targets(path)
    doc["version"], doc["edits"] = 1, [{"kind": "shift", "cells": [999], "vector": [1, 0]}]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not in the map"):
        load_targets(path)
    with pytest.raises(InputError, match="no such file"):
        load_targets(tmp_path / "missing.json")


def test_loss_value_and_gradient():
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], requires_grad=True)
    t = torch.tensor([[1.0, -2.0], [1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([True, True, False])
    loss = pli_loss(y, t, mask)
    assert loss.item() == pytest.approx((3.0 + 0.0) / 2)
    loss.backward()
    # d/dy |y - t|_1 / n_masked = sign(y - t) / 2 on masked rows, 0 elsewhere
    np.testing.assert_allclose(y.grad.numpy(), [[-0.5, 0.5], [0, 0], [0, 0]])
    w = torch.tensor([2.0, 1.0, 7.0])
    assert pli_loss(y, t, mask, w).item() == pytest.approx(2 * 3.0 / 2)
    empty = pli_loss(y, t, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="mask"):
        pli_loss(y, t, torch.ones(2, dtype=torch.bool))
