"""Test-wide configuration: Qt runs headless everywhere."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests use tiny tensors: with other jobs on the (2) cores, torch's OpenMP threads spin-wait
# and small ops get hundreds of times slower. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def tree_digest(path: Path) -> str:
    """Hash of a project folder's files (or of a file): unchanged data, unchanged hash.

    SQLite's ``-wal``/``-shm`` files come and go with connections and are left out.
    """
    import hashlib

    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    for f in files:
        if f.is_file() and not f.name.endswith(("-wal", "-shm")):
            h.update(str(f.relative_to(path) if f != path else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()
