"""Tasks the scale-out tests send to Dask workers.

A worker imports the module of every function it runs. Functions defined in a test
module would make it import that module, whose ``from conftest import …`` resolves to
whichever ``conftest`` comes first on the worker's ``sys.path`` (in a full run, another
folder's): the task then fails to unpickle and the worker dies. This module imports
nothing of the tests.
"""

from __future__ import annotations

import time


def sleep_one(x: int) -> int:
    time.sleep(1.0)
    return x


def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


def refuse(path: str) -> None:
    from hemalens.engine.errors import ProjectError

    raise ProjectError(path, "has no cells to predict")
