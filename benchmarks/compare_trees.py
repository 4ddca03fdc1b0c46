"""Run one benchmark in two source trees, interleaved, and print the ratios as JSON.

A change's before/after must come from one run on one machine (the shared machine is
noisy): this runs ``benchmarks/<bench>.py`` *of this tree* with the interpreter of each
tree (``<tree>/.venv/bin/python``, whose editable install maps ``hemalens`` to that
tree), alternating baseline and current ``--rounds`` times, and keeps the best of each
``frames_per_s`` found in the benchmark's JSON.

    git worktree add ../baseline <rev> && make -C ../baseline .venv/.installed  # once
    python -m benchmarks.compare_trees --baseline ../baseline -- --frames 200 --workers 2

The baseline tree needs a venv; a thin one (a ``.pth`` naming this venv's site-packages,
plus ``pip install -e . --no-deps``) is enough.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _rates(result: Any, prefix: str = "") -> dict[str, float]:
    """Every ``frames_per_s`` in a nested JSON result, keyed by its path."""
    found: dict[str, float] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "frames_per_s" and isinstance(value, int | float):
                found[prefix or key] = float(value)
            else:
                found |= _rates(value, path)
    return found


def _run(tree: Path, bench: str, args: list[str]) -> dict[str, Any]:
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"compare_trees: {tree} has no .venv (see the module docstring)")
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([str(python), str(HERE / f"{bench}.py"), *args], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"compare_trees: {bench} failed in {tree}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the older source tree")
    parser.add_argument("--current", type=Path, default=HERE.parent, help="default: this tree")
    parser.add_argument("--bench", default="bench_ingest", help="module in benchmarks/")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="after --: arguments for the benchmark")
    args = parser.parse_args(argv)
    bench_args = [a for a in args.bench_args if a != "--"]
    best: dict[str, dict[str, float]] = {"baseline": {}, "current": {}}
    last: dict[str, Any] = {}
    for _ in range(max(1, args.rounds)):
        for name, tree in (("baseline", args.baseline), ("current", args.current)):
            result = _run(tree.resolve(), args.bench, bench_args)
            last[name] = result
            for key, rate in _rates(result).items():
                best[name][key] = max(rate, best[name].get(key, 0.0))
    out = {
        "benchmark": "compare_trees",
        "bench": args.bench,
        "bench_args": bench_args,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_avg_end": os.getloadavg()[0],
        "frames_per_s": best,
        "ratio": {k: round(best["current"][k] / v, 2) for k, v in best["baseline"].items()
                  if v > 0 and k in best["current"]},
        "last_results": last,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
