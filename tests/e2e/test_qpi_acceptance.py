"""Issue acceptance on simulated QPI data: `synth qpi --frames 300 --seed 1` then `segment`.

Measured against the simulator's ground truth through the CLI, exactly as a user runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hemalens.engine.cli import main
from hemalens.engine.synth.scoring import score_segmentation


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    assert main(["synth", "qpi", str(out), "--frames", "300", "--seed", "1", "--holograms",
                 "--json"]) == 0
    return out


def _segment(sim: Path, modality: str, project: Path, capsys) -> dict:
    capsys.readouterr()
    code = main(["segment", "--manifest", str(sim / "manifest.csv"), "--modality", modality,
                 "-o", str(project), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["failed_inputs"]
    return report


def test_phase_path_against_ground_truth(sim, tmp_path, capsys):
    report = _segment(sim, "phase", tmp_path / "P.hemalens", capsys)
    score = score_segmentation(sim / "truth.csv", tmp_path / "P.hemalens")
    assert report["frames"] == 300
    assert score["target_leukocytes"] > 1000
    assert score["recall"] >= 0.98, score
    assert score["precision"] >= 0.98, score
    assert score["median_rel_diameter_error"] <= 0.05, score
    # Aggregates, thrombocytes and debris that were detected at all are rejected, with a reason.
    assert score["junk_detected"] > 50 and score["junk_rejected"] >= 0.95, score
    assert "" not in score["junk_rejected_reasons"]


def test_hologram_path_matches_phase_path(sim, tmp_path, capsys):
    phase = _segment(sim, "phase", tmp_path / "P.hemalens", capsys)
    holo = _segment(sim, "hologram", tmp_path / "H.h5", capsys)
    assert abs(holo["cells"] - phase["cells"]) / phase["cells"] <= 0.02, (holo, phase)
    score = score_segmentation(sim / "truth.csv", tmp_path / "H.h5")
    assert score["recall"] >= 0.98 and score["precision"] >= 0.98, score
