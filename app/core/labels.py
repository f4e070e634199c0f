"""What a slice or a study was judged: the labels stored, sent in the API and shown on the pages."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Label(StrEnum):
    """A result's label; its value is the string stored in the database and sent in JSON."""

    HEMORRHAGE = "hemorrhage"
    NO_HEMORRHAGE = "no_hemorrhage"
    # Stored instead of either when the image is not a head CT slice (ml.data.scope).
    OUT_OF_SCOPE = "out_of_scope"

    def __repr__(self) -> str:
        # Pydantic names the allowed values of a Literal by their repr in its 422 messages
        # ("Input should be 'hemorrhage' or 'no_hemorrhage'"): a member reads as the string it is.
        return repr(self.value)

    @classmethod
    def decided(cls, flagged: bool) -> Label:
        """The label of an in-scope result whose probability did (or did not) reach the threshold."""
        return cls.HEMORRHAGE if flagged else cls.NO_HEMORRHAGE


# A study is decided on its in-scope slices, so it is never out of scope.
StudyLabel = Literal[Label.HEMORRHAGE, Label.NO_HEMORRHAGE]
