"""Crowded stained fields: truth, scoring, and the nuclei-seeded RGB path on them."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np

from hemalens.engine.cli import main
from hemalens.engine.segment.rgb import rgb_objects
from hemalens.engine.synth.marrow_fields import FieldConfig, render_field, score_fields


def test_fields_are_crowded_and_scoring_counts_hits_splits_and_merges():
    cfg = FieldConfig(fields=1, seed=3, size=256)
    rgb, labels, truth = render_field(cfg, 0)
    cells = [r for r in truth if r["cell"] > 0]
    assert rgb.shape == (256, 256, 3) and labels.max() == len(cells) >= 5
    # neighbours touch or overlap: some centre pairs closer than the sum of the radii
    xy = np.array([(r["x"], r["y"]) for r in cells])
    rad = np.array([r["diameter_um"] / 2 / cfg.pixel_size_um for r in cells])
    d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
    assert (d[np.triu_indices(len(cells), 1)] < (rad[:, None] + rad[None])[
        np.triu_indices(len(cells), 1)]).sum() >= 3
    # perfect detections (the truth masks) score recall = precision = 1
    perfect = []
    for k in range(1, labels.max() + 1):
        found, _ = cv2.findContours((labels == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                    cv2.CHAIN_APPROX_NONE)
        perfect.append(max(found, key=cv2.contourArea))
    s = score_fields([labels], [perfect], [truth])
    assert s["recall"] > 0.9 and s["precision"] > 0.9 and s["merge_rate"] == 0
    # one detection covering everything is a single merge, recall 0
    whole, _ = cv2.findContours((labels > 0).astype(np.uint8) * 0 + 1, cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_NONE)
    s = score_fields([labels], [whole], [truth])
    assert s["recall"] == 0 and s["merge_rate"] == 1


def test_nuclei_seeded_path_beats_the_foreground_rule_on_crowds():
    cfg = FieldConfig(fields=3, seed=11, size=256)
    runs = {True: [], False: []}
    labels, truth = [], []
    for i in range(cfg.fields):
        rgb, lab, rows = render_field(cfg, i)
        labels.append(lab)
        truth.append(rows)
        for flag in runs:
            runs[flag].append(rgb_objects(rgb, cfg.pixel_size_um, 4.0, 20, use_nuclei=flag)[0])
    new = score_fields(labels, runs[True], truth)
    old = score_fields(labels, runs[False], truth)
    assert new["recall"] > old["recall"] + 0.2, (new, old)
    assert new["merge_rate"] < old["merge_rate"], (new, old)


def test_cli_writes_crowded_fields(tmp_path, capsys):
    assert main(["synth", "marrow", str(tmp_path / "f"), "--crowded", "2", "--seed", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fields"] == 2
    with open(tmp_path / "f" / "fields_truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == out["cells"] > 0
    lab = cv2.imread(str(tmp_path / "f" / "fields" / "0000_labels.png"), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint16 and lab.max() >= 1
    assert (tmp_path / "f" / "manifest.csv").is_file()
