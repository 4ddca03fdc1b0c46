"""Issue 13 acceptance: OOD AUROC of every measure and of ``ood_score`` over training seeds.

``synth qpi --frames 200 --seed 5`` -> segment -> for each seed: ``train`` (LeNet5, 30
epochs; stores the OOD detector) -> ``ood_review`` (300 cells per OOD set). Prints one JSON
object: per seed the AUROC (all cells) of ``ood_score`` and of the MC measures per set,
the flag rates, and min/mean over seeds. Run::

    nice -n 5 .venv/bin/python -m benchmarks.bench_ood --seeds 3 4 5 --ood-seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from hemalens.engine.cli import main
from hemalens.engine.models.store import load_model
from hemalens.engine.review.ood import OOD_SETS
from hemalens.engine.train import TrainConfig
from hemalens.engine.workflows.review import ood_review
from hemalens.engine.workflows.train import train_project


def run(seeds: list[int], ood_seed: int, n: int, passes: int, epochs: int,
        workdir: Path) -> dict:
    """Train one model per seed on the issue's project and review its OOD sets."""
    sim, base = workdir / "sim", workdir / "P.hemalens"
    if not base.exists():
        assert main(["synth", "qpi", str(sim), "--frames", "200", "--seed", "5",
                     "--json"]) == 0
        assert main(["segment", "--manifest", str(sim / "manifest.csv"), "-o", str(base),
                     "--json"]) == 0
    out: dict = {"seeds": {}, "ood_seed": ood_seed, "n": n, "passes": passes,
                 "epochs": epochs}
    for seed in seeds:
        project = workdir / f"P{seed}.hemalens"
        if project.exists():
            shutil.rmtree(project)
        shutil.copytree(base, project)
        trained = train_project(project, TrainConfig(arch="lenet5", epochs=epochs, seed=seed),
                                passes=passes)
        review = ood_review(project, n=n, passes=passes, seed=ood_seed)
        _, meta = load_model(project)
        out["seeds"][seed] = {
            "test_f1": trained["test"]["table1"]["freq"]["f1"],
            "auroc": {m: review[m]["auroc"] for m in review["candidates"]},
            "best_measure": review["best_measure"],
            "best_measure_auroc_report_half": review["best_measure_auroc"],
            "parts": meta["extra"]["ood"]["parts"],
        }
    for m in out["seeds"][seeds[0]]["auroc"]:
        vals = np.array([[out["seeds"][s]["auroc"][m][o] for o in OOD_SETS] for s in seeds])
        out.setdefault("summary", {})[m] = {
            o: {"mean": round(float(vals[:, i].mean()), 4),
                "min": round(float(vals[:, i].min()), 4)}
            for i, o in enumerate(OOD_SETS)}
    return out


def cli() -> None:
    """Command line entry point (prints JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ood-seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--mc", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_ood-"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(a.seeds, a.ood_seed, a.n, a.mc, a.epochs, work), indent=1))


if __name__ == "__main__":
    cli()
