"""Exceptions whose message is a one-line reason a person can act on."""

from __future__ import annotations

from os import PathLike


class HemaLensError(Exception):
    """Base class: ``str(err)`` is a single line meant for the user."""


class InputError(HemaLensError):
    """An input file cannot be used; the message names the file.

    Parameters
    ----------
    path : str or PathLike
        The offending file, as the user named it.
    reason : str
        What is wrong, in one line.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # force a single line
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple:
        # pickled as (path, reason): an error raised on a Dask worker reaches the driver
        # as the same class with the same one-line message
        return (type(self), (self.path, self.reason))


class MetadataError(InputError):
    """Pixel size, wavelength or another needed acquisition value is missing or invalid."""


class ProjectError(InputError):
    """A project file is missing, truncated, foreign or of an unknown schema version."""
