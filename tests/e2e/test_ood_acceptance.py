"""Issue 13 acceptance: the OOD score over 3 training seeds (slow: ~10 min on 2 cores).

``synth qpi --frames 200 --seed 5`` -> segment -> train LeNet5 (seeds 0, 1, 2; the model
stores its OOD detector) -> ``ood_review`` with 300 cells per OOD set: AUROC of
``ood_score`` >= 0.99 for digits and noise and >= 0.90 for erythrocytes on every seed.
The same run as ``python -m benchmarks.bench_ood --seeds 0 1 2 --ood-seed 0``.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_ood import run

pytestmark = pytest.mark.slow


def test_ood_score_separates_every_set_over_three_seeds(tmp_path):
    result = run([0, 1, 2], ood_seed=0, n=300, passes=100, epochs=30, workdir=tmp_path)
    for seed, r in result["seeds"].items():
        auroc = r["auroc"]["ood_score"]
        assert auroc["digits"] >= 0.99 and auroc["noise"] >= 0.99, (seed, auroc)
        assert auroc["erythrocyte"] >= 0.90, (seed, auroc)
        # no single confidence measure does this (issue 13's table)
        assert min(r["auroc"]["mc_mean_ts"]["digits"], r["auroc"]["mc_mean_ts"]["noise"]) < 0.9
