"""Outlines of haemorrhage by subtype as the service stores and shows them.

A slice's segmentation is kept in two places: the class map as ``mask.png`` (class indices
0..5, one channel, at the uploaded image's size) with its coloured outlines as ``contours.png``
(RGBA, transparent except for the outlines), and its numbers (subtype probabilities, areas) in
the stored record's details. A study adds volumes: voxel counting over the slices, and the
bedside ABC/2 estimate beside it.

| module | what |
| --- | --- |
| :mod:`.records` | areas, pixel spacing, what a slice's and a study's records keep |
| :mod:`.volumes` | slice spacing, the blood masks of a series, voxel and ABC/2 volumes |
| :mod:`.images` | ``mask.png``, ``contours.png`` and the outlines over the slice |
| :mod:`.presentation` | what the outline model's card says the outlines are worth (``OutlineCard``, read once), the legend's rows and the sentences the pages and reports show |
"""

from app.core.wording import area_text
from app.services.segmentation.images import composite_png, contours_png, mask_png
from app.services.segmentation.presentation import (
    FALLBACK_NOTE,
    POINTING_GAME_POOR,
    SPACING_SOURCES,
    SUBTYPE_TITLES,
    OutlineCard,
    colour_hex,
    help_sentences,
    legend,
    study_summary_sentences,
)
from app.services.segmentation.records import (
    CONTOURS_FILE,
    MASK_FILE,
    area_mm2,
    most_outlined_slices,
    pixel_spacing,
    slice_record,
    study_slice_record,
)
from app.services.segmentation.volumes import (
    NO_PIXEL_SPACING,
    NO_SLICE_SPACING,
    PackedMasks,
    StudySegmentation,
    slice_spacing_mm,
)

__all__ = [
    "CONTOURS_FILE",
    "FALLBACK_NOTE",
    "MASK_FILE",
    "NO_PIXEL_SPACING",
    "NO_SLICE_SPACING",
    "OutlineCard",
    "POINTING_GAME_POOR",
    "SPACING_SOURCES",
    "SUBTYPE_TITLES",
    "PackedMasks",
    "StudySegmentation",
    "area_mm2",
    "area_text",
    "colour_hex",
    "composite_png",
    "contours_png",
    "help_sentences",
    "legend",
    "mask_png",
    "most_outlined_slices",
    "pixel_spacing",
    "slice_record",
    "slice_spacing_mm",
    "study_slice_record",
    "study_summary_sentences",
]
