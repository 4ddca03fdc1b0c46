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
