"""A stored study's PDF report, assembled from its record, its model's card and its stored images.

:func:`render_study_pdf` gathers what the study report shows (the slice probabilities, the key
slices' overlays, the most outlined slices with their outlines drawn on, the decision and its rule)
and hands it to :func:`app.services.reporting.render_study_report`, which lays it out.
"""

from __future__ import annotations

from app.services.analysis import report_preamble
from app.services.details import StudySegmentationRecord
from app.services.registry import ModelRegistry
from app.services.reporting import KeySlice, StudyReport, render_study_report, study_report_section
from app.services.segmentation import area_mm2, area_text, composite_png, most_outlined_slices, pixel_spacing
from app.services.storage import STUDIES, FileStore
from app.services.study_record import StudyRecord, decision_rule, slice_file


def render_study_pdf(registry: ModelRegistry, files: FileStore, record: StudyRecord) -> bytes:
    """The PDF study report: chart of slice probabilities, key-slice overlays, the decision."""
    study = record.study
    section = None
    segmentation = record.details.segmentation
    if segmentation is not None:
        section = study_report_section(
            segmentation,
            registry.outline_card(segmentation),
            outlined_images(files, study.id, segmentation),
        )
    slice_threshold = record.details.slice_threshold
    report = StudyReport(
        **report_preamble(registry, study),
        aggregation=study.aggregation,
        slice_probabilities=[item.probability for item in record.slices],
        slice_threshold=float(study.threshold if slice_threshold is None else slice_threshold),
        key_slices=key_slice_overlays(files, record),
        source_format="DICOM series" if study.source == "upload" else "DICOM series from the PACS",
        skipped_count=len(record.details.skipped),
        segmentation=section,
        decision_rule=decision_rule(registry, record),
        criteria=record.criteria_sentence,
        flagged_by_outline=record.flagged_by_outline_alone,
    )
    return render_study_report(report)


def key_slice_overlays(files: FileStore, record: StudyRecord) -> list[KeySlice]:
    """The study's key slices for its report: each one's probability, position and stored overlay."""
    return [
        KeySlice(
            index=index,
            probability=record.slices[index].probability,
            position_mm=record.slices[index].position_mm,
            overlay_png=files.read(record.study.id, slice_file("overlay", index), STUDIES),
        )
        for index in record.key_slices
        if 0 <= index < len(record.slices)
    ]


def outlined_images(
    files: FileStore, study_id: str, segmentation: StudySegmentationRecord
) -> list[tuple[bytes, str]]:
    """The most outlined slices with their outlines drawn on, captioned with their areas."""
    images = []
    spacing = pixel_spacing(segmentation.pixel_spacing_mm)
    for index in most_outlined_slices(segmentation):
        if not files.exists(study_id, slice_file("contours", index), STUDIES):
            continue
        area = sum(segmentation.slices[index].area_px)
        images.append(
            (
                composite_png(
                    files.read(study_id, slice_file("slice", index), STUDIES),
                    files.read(study_id, slice_file("contours", index), STUDIES),
                ),
                f"Slice {index + 1}: {area_text(area, area_mm2(area, spacing))} outlined",
            )
        )
    return images
