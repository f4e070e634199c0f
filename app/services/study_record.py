"""What a study is and how it is decided: its stored record, its key slices and its decision rule.

:class:`StudyRecord` is a stored study with its slices in anatomical order and its details read
once; :class:`StudyDecision` is how a classifier turns slice probabilities (and, for a multitask
model, outlined pixels) into the study's result, and :func:`decision_rule` says it in words from
the model's card. :func:`slice_file` names a slice's stored images and :func:`slice_rows` makes a
new study's slice rows. Running an analysis and storing it is :mod:`app.services.studies`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.core.wording import study_criteria_sentence, study_rule_sentences
from app.db import CARD_OPERATING_POINT, Study, StudySlice
from app.services.details import StudyCriteria, StudyDetails
from app.services.inference import SliceClassifier
from app.services.registry import ModelRegistry
from app.services.segmentation import StudySegmentation
from ml.data.series import StudySeries
from ml.evaluation.study_outline import flagged_by

NUM_KEY_SLICES = 3


def slice_file(kind: str, index: int) -> str:
    """The stored file name of slice ``index`` (``kind``: ``"slice"``, ``"overlay"``, ``"mask"``, ``"contours"``)."""
    return f"{kind}_{index:03d}.png"


def key_slice_indices(probabilities: Sequence[float], count: int = NUM_KEY_SLICES) -> list[int]:
    """Indices of the ``count`` most probable slices, most probable first (ties: lower index first)."""
    order = sorted(range(len(probabilities)), key=lambda index: (-probabilities[index], index))
    return order[:count]


@dataclass
class StudyRecord:
    """A stored study, its slices in anatomical order, and its details validated once."""

    study: Study
    slices: list[StudySlice]
    details: StudyDetails = field(init=False)

    def __post_init__(self) -> None:
        self.details = StudyDetails.read(self.study.details)

    @property
    def key_slices(self) -> list[int]:
        """The most probable slices, as stored (or worked out again for rows that lack them)."""
        if self.details.key_slices is not None:
            return list(self.details.key_slices)
        return key_slice_indices([item.probability for item in self.slices])

    @property
    def criteria_sentence(self) -> str | None:
        """Which criterion of its rule flagged the study (or why none did), when its rule has the
        outline criterion; ``None`` otherwise."""
        criteria = self.details.criteria
        if criteria is None or self.study.probability is None:
            return None
        return study_criteria_sentence(
            criteria.flagged_by,
            self.study.probability,
            self.study.threshold,
            criteria.outline_px,
            criteria.outline_threshold_px,
        )

    @property
    def flagged_by_outline_alone(self) -> bool:
        """Whether only the outline criterion flagged the study (its probability stays under the threshold)."""
        criteria = self.details.criteria
        return criteria is not None and list(criteria.flagged_by) == ["outline"]

    @property
    def skipped(self) -> list[dict[str, str]]:
        """The uploaded objects that were not analysed, as ``{"name", "reason"}``."""
        return [{"name": item.name, "reason": item.reason} for item in self.details.skipped]


@dataclass(frozen=True)
class StudyDecision:
    """How a model turns slice probabilities into a study result."""

    aggregation: str
    threshold: float
    # Where the threshold came from: "model card default" or the site operating point's description.
    operating_point: str = CARD_OPERATING_POINT
    # The outline criterion (a multitask card's ``study_outline_px``): the study is also flagged
    # when its outlined pixels on the model grid, summed over the slices, reach this count.
    outline_px: int | None = None

    @classmethod
    def for_classifier(cls, classifier: SliceClassifier) -> StudyDecision:
        """The classifier's operating point: its card's ``study_aggregation`` and ``study_threshold``
        (with safe defaults), or the study threshold a site chose; and its card's outline criterion."""
        point = classifier.operating_point
        return cls(
            aggregation=point.aggregation,
            threshold=point.study.value,
            operating_point=point.study.source,
            outline_px=classifier.model_card.study_outline_px if classifier.outlines_itself else None,
        )

    def criteria(self, probability: float, segmentation: StudySegmentation | None) -> StudyCriteria:
        """Which criteria flag a study with this aggregated ``probability`` and these outlines
        (``None`` when the series was analysed without outlines: the outline criterion cannot apply)."""
        outlined = segmentation.grid_blood_px if segmentation is not None else None
        return StudyCriteria(
            flagged_by=flagged_by(probability, outlined, self.threshold, self.outline_px),
            outline_threshold_px=self.outline_px,
            outline_px=outlined,
        )


def decision_rule(registry: ModelRegistry, record: StudyRecord) -> list[str]:
    """How the study's decision was made and what its rule measured, from its model's card."""
    study = record.study
    card = registry.find_card(study.model_name, study.model_version)
    criteria = record.details.criteria
    return study_rule_sentences(
        study.aggregation,
        study.threshold,
        card.study_threshold if card else None,
        card.study_results() if card else [],
        criteria.outline_threshold_px if criteria is not None else None,
        card.input_shape[0] if card and card.input_shape else None,
    )


def slice_rows(study_id: str, series: StudySeries, probabilities: Sequence[float]) -> list[StudySlice]:
    """The rows of a new study's slices, in anatomical order."""
    return [
        StudySlice(
            study_id=study_id,
            slice_index=index,
            sop_instance_uid=item.sop_instance_uid,
            position_mm=item.position_mm,
            probability=probabilities[index],
        )
        for index, item in enumerate(series.slices)
    ]
