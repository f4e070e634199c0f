"""What the command-line tools share: a usage or data error is one line on stderr and exit status 2.

Usage::

    parser = ArgumentParser(description="...")
    args = parser.parse_args(argv)
    with data_errors(parser):
        samples = read_labelled_csv(args.labels)

A :class:`~ml.errors.DataError` (a missing or malformed file) and a bad option value end the tool
with ``prog: error: <message>``; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, Protocol

from ml.errors import DataError, MissingDataFile

__all__ = ["ArgumentParser", "add_fitting_options", "data_errors", "require_dir", "require_file"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, pointing to ``--help`` for the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class FittingDefaults(Protocol):
    """The fitting settings every training configuration has (its defaults are the options')."""

    epochs: int
    learning_rate: float
    patience: int
    time_budget_minutes: float
    seed: int


def add_fitting_options(parser: argparse.ArgumentParser, defaults: FittingDefaults) -> None:
    """The options of the training tools that say how long and how to fit, defaulting to ``defaults``."""
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--time-budget-min", type=float, default=defaults.time_budget_minutes)
    parser.add_argument("--seed", type=int, default=defaults.seed)


def one_line(message: str) -> str:
    """``message`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(message.split())


def require_file(path: Path | str | None, option: str) -> None:
    """A :class:`MissingDataFile` unless the file that ``option`` names is there (``None``: not given)."""
    if path is not None and not Path(path).is_file():
        raise MissingDataFile(f"{option}: no such file: {path}")


def require_dir(path: Path | str | None, option: str) -> None:
    """A :class:`MissingDataFile` unless the folder that ``option`` names is there (``None``: not given)."""
    if path is not None and not Path(path).is_dir():
        raise MissingDataFile(f"{option}: no such folder: {path}")


@contextmanager
def data_errors(
    parser: argparse.ArgumentParser, errors: tuple[type[Exception], ...] = (DataError,)
) -> Iterator[None]:
    """Inside the block, turn ``errors`` into ``prog: error: <message>`` and exit status 2.

    Args:
        parser: the tool's parser; its ``prog`` starts the line.
        errors: the exception classes that are the user's to fix. Widen it (``ValueError``) only
            around code that does nothing but check option values, such as a config's validation.
    """
    try:
        yield
    except errors as error:
        parser.exit(2, f"{parser.prog}: error: {one_line(str(error))}\n")
