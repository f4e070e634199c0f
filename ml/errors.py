"""Errors in what a person handed to the library: a file that is missing, unreadable or malformed.

They are the person's to fix, not bugs: the command-line tools answer them with one line and exit
status 2 (:func:`ml.cli.data_errors`), while any other exception keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "MissingDataFile"]


class DataError(ValueError):
    """A label file, image, mask or model bundle that cannot be used as it is; the message names
    the file, what is wrong with it and, where it helps, how to fix it."""


class MissingDataFile(DataError, FileNotFoundError):
    """A file or folder that the input names is not there (also a :class:`FileNotFoundError`)."""
