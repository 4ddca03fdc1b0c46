"""Writer loops for the kill -9 tests (run in forked processes; see test_project_crash.py).

Each loop appends one line to ``ack_path`` after every call that returned: the call's
data is then acknowledged as durable, and a kill at any later moment must not lose it.
"""

from __future__ import annotations

import numpy as np


def _ack(fh, text: str) -> None:
    fh.write(text + "\n")
    fh.flush()


def edit_loop(path: str, ack_path: str) -> None:
    from hemalens.engine.project.labels import writable_store

    with writable_store(path) as store, open(ack_path, "a") as fh:
        i = 0
        while True:
            r = store.apply("relabel", [i % 200], user="k", labels=(i // 200 + 1) % 3,
                            decision="relabelled", reason=str(i))
            _ack(fh, f"{i} {r.action}")
            i += 1


def predict_loop(path: str, ack_path: str, n: int) -> None:
    from hemalens.engine.review.predictions import write_predictions

    with open(ack_path, "a") as fh:
        k = 1
        while True:
            write_predictions(path, "m", {"predicted": np.full(n, k, np.int16),
                                          "confidence": np.full(n, k / 1000, np.float32),
                                          "probs": np.full((n, 50), k, np.float32)},
                              {"version": k})
            _ack(fh, str(k))
            k += 1


def explain_loop(path: str, ack_path: str) -> None:
    from hemalens.engine.explain.store import write_explanations

    with open(ack_path, "a") as fh:
        k = 0
        while True:
            ids = np.arange(k * 5, k * 5 + 5) % 200
            write_explanations(path, "m", "lime", ids, np.full((5, 8, 8), float(k + 1)),
                               np.zeros(5, int), model_created="t")
            _ack(fh, str(k))
            k += 1


def migrate(path: str) -> None:
    from hemalens.engine.project.migrate import migrate_v1

    migrate_v1(path)


def serve() -> None:
    """A fork server: read ``name arg ...`` lines, fork a child running that loop, print
    its pid; ``reap PID`` waits for a killed child. Starting a writer then costs a fork
    (milliseconds) instead of an interpreter start with NumPy and HDF5 (a second)."""
    import os
    import sys

    loops = {"edit": edit_loop, "predict": predict_loop, "explain": explain_loop,
             "migrate": migrate}
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "reap":
            os.waitpid(int(words[1]), 0)
            print("reaped", flush=True)
            continue
        pid = os.fork()
        if pid == 0:  # the child: run the loop until killed
            try:
                fn = loops[words[0]]
                args = [int(a) if a.isdigit() else a for a in words[1:]]
                fn(*args)
            finally:
                os._exit(0)
        print(pid, flush=True)


if __name__ == "__main__":
    import hemalens.engine.explain.store  # noqa: F401 - imported once, before any fork
    import hemalens.engine.project.labels  # noqa: F401
    import hemalens.engine.project.migrate  # noqa: F401
    import hemalens.engine.review.predictions  # noqa: F401

    serve()
