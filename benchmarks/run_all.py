"""Run every benchmark in its own process and print one JSON object of their results.

    python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

BENCHMARKS = {
    "segment": ["--frames", "1000"],
    "hologram": ["--frames", "50"],
    "ingest": ["--frames", "300"],
    "project": ["--cells", "100000"],
    "mc_dropout": ["--arch", "both"],
    "predict": ["--frames", "300"],
    "train": [],
    "explain": ["--cells", "20", "--alexnet-cells", "2"],
    "meta_explain": ["--cells", "5000"],
    "ptsne": [],
    "embed_epoch": ["--cells", "2000", "--epochs", "3"],
    "dryrun": [],
    "circularity": [],
    "crowded": ["--fields", "12"],
}
QUICK = {"segment": ["--frames", "200"], "hologram": ["--frames", "10"],
         "ingest": ["--frames", "60"], "project": ["--cells", "5000"],
         "mc_dropout": ["--arch", "lenet5", "--cells", "500"], "predict": ["--frames", "40"],
         "train": [], "explain": ["--cells", "3", "--alexnet-cells", "1"],
         "meta_explain": ["--cells", "300"], "ptsne": [],
         "embed_epoch": ["--cells", "300", "--epochs", "2"],
         "dryrun": ["--n", "600", "--iterations", "5", "--folds", "3"],
         "circularity": ["--frames", "60"], "crowded": ["--fields", "2"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": platform.processor() or platform.machine(),
                                  "python": platform.python_version()}
    for name, argv in (QUICK if args.quick else BENCHMARKS).items():
        out = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}", *argv],
                             capture_output=True, text=True, check=True)
        text = out.stdout.strip()
        try:  # one JSON object, indented or not
            results[name] = json.loads(text)
        except json.JSONDecodeError:  # anything printed before it: the object is the last line
            results[name] = json.loads(text.splitlines()[-1])
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
