"""The PDF diagnostic reports: one CT slice, or a whole CT study.

The report is decision support, not a diagnosis: every page says "Not for clinical use" and carries
the model name and version (and the segmentation model's, when outlines are shown), as MONAI Deploy
stamps its model information on each output.

| module | what |
| --- | --- |
| :mod:`.fonts` | the embedded fonts, and user text escaped into paragraph markup |
| :mod:`.layout` | A4 geometry, colours, styles, tables, images, the footer, the PDF itself |
| :mod:`.sections` | header, banner, patient table, verdict box, model and limitations |
| :mod:`.outlines` | the outlines of possible haemorrhage by subtype |
| :mod:`.slice_report` | the report on one slice |
| :mod:`.study_report` | the report on a whole study |
"""

from app.core.wording import (
    AGGREGATION_TEXT,
    NOT_GIVEN,
    OUT_OF_SCOPE_VERDICT,
    finding_sentence,
    format_percent,
)
from app.db import CARD_OPERATING_POINT
from app.services.reporting.fonts import (
    FONT_BOLD,
    FONT_CJK,
    FONT_FILES,
    FONT_REGULAR,
    ReportFontsMissing,
    register_fonts,
)
from app.services.reporting.outlines import (
    SegmentationSection,
    SubtypeLine,
    slice_report_section,
    study_report_section,
)
from app.services.reporting.sections import ReportModelInfo
from app.services.reporting.slice_report import SliceReport, render_slice_report
from app.services.reporting.study_report import (
    KeySlice,
    StudyReport,
    render_study_report,
    slice_probability_chart,
    study_decision_sentence,
)

__all__ = [
    "AGGREGATION_TEXT",
    "CARD_OPERATING_POINT",
    "FONT_BOLD",
    "FONT_CJK",
    "FONT_FILES",
    "FONT_REGULAR",
    "NOT_GIVEN",
    "OUT_OF_SCOPE_VERDICT",
    "KeySlice",
    "ReportFontsMissing",
    "ReportModelInfo",
    "SegmentationSection",
    "SliceReport",
    "StudyReport",
    "SubtypeLine",
    "finding_sentence",
    "format_percent",
    "register_fonts",
    "render_slice_report",
    "render_study_report",
    "slice_probability_chart",
    "slice_report_section",
    "study_decision_sentence",
    "study_report_section",
]
