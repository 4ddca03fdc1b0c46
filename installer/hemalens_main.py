"""Entry point of the standalone build: the same ``hemalens`` command as the console script."""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not re-run the CLI
    from hemalens.engine.cli import main

    sys.exit(main())
