"""A site's operating point: decision thresholds chosen on its own images, as a small JSON file.

The model card's thresholds were chosen on the training collections. ``python -m ml.evaluate
--choose-threshold 0.95 --write-operating-point FILE`` chooses, on a site's labelled images, the
highest slice threshold (and, with a patient column, study threshold) that keeps the target
sensitivity there, and writes them with where they came from. The service reads the file
(``ICH_OPERATING_POINT``) and decides with it, after checking that it was chosen for the model
it serves.

Example file::

    {
     "format": "ich-detect-operating-point",
     "format_version": 1,
     "model": {"name": "ich-compact", "version": "1.1.0"},
     "slice_threshold": 0.738813,
     "study_threshold": 0.71,
     "study_aggregation": "top3_mean",
     "chosen_on": {"labels": "validation.csv", "images": 212, "positive_images": 41,
                   "target_sensitivity": 0.95,
                   "slice": {"sensitivity": 0.951, "specificity": 0.62},
                   "study": {"patients": 30, "sensitivity": 1.0, "specificity": 0.7}},
     "created": "2026-12-01"
    }
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ChosenOn",
    "MeasuredAt",
    "ModelName",
    "OperatingPoint",
    "OperatingPointError",
    "StudyMeasuredAt",
    "load_operating_point",
]

FORMAT: Final = "ich-detect-operating-point"
FORMAT_VERSION: Final = 1

# A threshold of 0 flags everything and 1 nothing: neither is an operating point.
Threshold = Annotated[float, Field(gt=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class OperatingPointError(ValueError):
    """An operating point file that cannot be used: unreadable, malformed, or for another model."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelName(_Frozen):
    """The model (name and version) the thresholds were chosen for."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class MeasuredAt(_Frozen):
    """Sensitivity and specificity on the images the threshold was chosen on."""

    sensitivity: Fraction
    specificity: Fraction | None = Field(
        default=None, description="None when the images had no negative (label 0) one."
    )


class StudyMeasuredAt(MeasuredAt):
    """The same per patient, each decided as the service decides a study."""

    patients: int = Field(ge=1)


class ChosenOn(_Frozen):
    """Where the thresholds were chosen: the labelled CSV, how many images, what they gave there."""

    labels: str = Field(min_length=1, description="The CSV's file name.")
    images: int = Field(ge=1)
    positive_images: int = Field(ge=1)
    target_sensitivity: float = Field(gt=0.0, le=1.0)
    slice: MeasuredAt
    study: StudyMeasuredAt | None = None

    @model_validator(mode="after")
    def _positives_among_images(self) -> ChosenOn:
        if self.positive_images > self.images:
            raise ValueError(f"positive_images ({self.positive_images}) exceeds images ({self.images}).")
        return self


class OperatingPoint(_Frozen):
    """Decision thresholds a site chose for one model version, and where they came from."""

    format: Literal["ich-detect-operating-point"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    model: ModelName
    slice_threshold: Threshold
    study_threshold: Threshold | None = Field(
        default=None, description="None: studies keep the model card's study threshold."
    )
    study_aggregation: str | None = Field(
        default=None, description="The aggregation the study threshold was chosen under (the card's)."
    )
    chosen_on: ChosenOn
    created: date

    @model_validator(mode="after")
    def _study_parts_together(self) -> OperatingPoint:
        if self.study_threshold is not None and not self.study_aggregation:
            raise ValueError("study_threshold needs study_aggregation, the aggregation it was chosen under.")
        if self.study_threshold is not None and self.chosen_on.study is None:
            raise ValueError("study_threshold needs chosen_on.study, the patients it was chosen on.")
        return self

    def slice_source(self) -> str:
        """How results decided with the slice threshold name it, e.g. ``site operating point,
        chosen on 212 images on 2026-12-01 (site.csv: sensitivity 0.95, specificity 0.62)``."""
        chosen = self.chosen_on
        return (
            f"site operating point, chosen on {chosen.images} images on {self.created.isoformat()} "
            f"({chosen.labels}: {_measured(chosen.slice)})"
        )

    def study_source(self) -> str | None:
        """The same for the study threshold; None when the file sets none."""
        chosen = self.chosen_on
        if self.study_threshold is None or chosen.study is None:
            return None
        return (
            f"site operating point, chosen on {chosen.study.patients} patients on "
            f"{self.created.isoformat()} ({chosen.labels}: {_measured(chosen.study)})"
        )

    def check_model(self, name: str, version: str, aggregation: str | None = None) -> None:
        """Refuse use with any model other than the one the thresholds were chosen for.

        Raises:
            OperatingPointError: another model name or version, or (with a study threshold)
                another study aggregation than ``aggregation``.
        """
        if (self.model.name, self.model.version) != (name, version):
            raise OperatingPointError(
                f"The operating point was chosen for {self.model}, but the model served is {name} {version}; thresholds "
                f"do not carry over between models. Choose one for {name} {version} with 'python -m "
                "ml.evaluate --model-dir <bundle> --labels <csv> --choose-threshold 0.95 "
                "--write-operating-point <file>'."
            )
        if (
            self.study_threshold is not None
            and aggregation is not None
            and self.study_aggregation != aggregation
        ):
            raise OperatingPointError(
                f"The operating point's study threshold was chosen for the aggregation {self.study_aggregation!r}, but "
                f"{name} {version} aggregates studies with {aggregation!r}."
            )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1) + "\n"

    def write(self, path: Path) -> Path:
        """Write the file (its folder is created when missing)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def today(cls) -> date:
        return datetime.now(UTC).date()


def _measured(measured: MeasuredAt) -> str:
    specificity = "n/a" if measured.specificity is None else f"{measured.specificity:.2f}"
    return f"sensitivity {measured.sensitivity:.2f}, specificity {specificity}"


def load_operating_point(path: Path) -> OperatingPoint:
    """Read and validate an operating point file.

    Raises:
        OperatingPointError: the file cannot be read, is not JSON, or is not a valid operating
            point (the message names each wrong field).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatingPointError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}).") from exc
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OperatingPointError(f"{path} is not JSON ({exc}).") from exc
    try:
        return OperatingPoint.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors()
        )
        raise OperatingPointError(f"{path} is not a valid operating point file ({problems}).") from exc
