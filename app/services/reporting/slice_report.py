"""The PDF report on one CT slice.

The report is decision support, not a diagnosis: every page says "Not for clinical use" and carries
the model name and version (and the segmentation model's, when outlines are shown), as MONAI Deploy
stamps its model information on each output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Paragraph, Spacer, TableStyle

from app.core.labels import Label
from app.core.wording import VERDICTS, finding_sentence, percent_pair
from app.services.reporting.fonts import markup
from app.services.reporting.layout import (
    CONTENT_WIDTH,
    IMAGE_CELLS,
    IMAGE_GAP,
    IMAGE_MAX_HEIGHT,
    LABEL_GREY,
    MUTED,
    NEGATIVE,
    NEGATIVE_TINT,
    POSITIVE,
    POSITIVE_TINT,
    SECTION_GAP,
    TITLE,
    ReportTable,
    Styles,
    build_pdf,
    bullets,
    fitted_image,
)
from app.services.reporting.outlines import SegmentationSection, outlines_section
from app.services.reporting.sections import (
    HeatmapLegend,
    ReportDetails,
    closing_sections,
    opening_sections,
    operating_point_line,
    validate,
    verdict_box,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceReport(ReportDetails):
    """Everything the report on one slice shows: :class:`ReportDetails`, and

    Attributes:
        original_png: PNG of the original slice (greyscale or RGB).
        overlay_png: PNG of the Grad-CAM overlay (RGB).
        extra_findings: further notes shown under the finding.
        segmentation: the outlines by subtype, when the slice was segmented.

    Its ``label`` is ``"hemorrhage"``, ``"no_hemorrhage"`` or ``"out_of_scope"`` (not a head CT
    slice).
    """

    original_png: bytes
    overlay_png: bytes
    extra_findings: list[str] = field(default_factory=list)
    segmentation: SegmentationSection | None = None


def render_slice_report(report: SliceReport) -> bytes:
    """Render the report as an A4 PDF.

    Args:
        report: the finding, the images and the patient and study details to show.

    Returns:
        The report as PDF bytes.

    Raises:
        ValueError: if the probability or threshold is outside [0, 1], the label is unknown or
            contradicts the probability and threshold, ``created_at`` has no time zone, or an image
            cannot be read.
    """
    validate(report, [Label.HEMORRHAGE, Label.NO_HEMORRHAGE, Label.OUT_OF_SCOPE])
    created_utc = report.created_at.astimezone(UTC)
    styles = Styles()
    story: list[Flowable] = [
        *opening_sections(
            report,
            created_utc,
            "Single CT slice \u00b7 ICH Detect automated analysis",
            report.source_format.upper() if report.source_format else None,
            styles,
        ),
        *_finding_section(report, styles),
        Spacer(1, SECTION_GAP),
        _images_section(report, styles),
        Spacer(1, SECTION_GAP),
        *outlines_section(report.segmentation, styles),
        *closing_sections(report.model, report.limitations, styles),
    ]

    pdf = build_pdf(
        story,
        f"{TITLE} - report {report.report_id}",
        report.report_id,
        f"{report.model.name} {report.model.version}",
        report.segmentation.model_line if report.segmentation is not None else None,
    )
    logger.debug("Rendered report %s (%d bytes)", report.report_id, len(pdf))
    return pdf


def _finding_section(report: SliceReport, styles: Styles) -> list[Flowable]:
    """The verdict, the finding in words, the probability against the threshold and its source."""
    positive = report.label == Label.HEMORRHAGE
    accent = POSITIVE if positive else NEGATIVE
    tint = POSITIVE_TINT if positive else NEGATIVE_TINT
    verdict = VERDICTS[report.label]
    if report.label == Label.OUT_OF_SCOPE:
        accent, tint = MUTED, LABEL_GREY
    shown_probability, shown_threshold = percent_pair(report.probability, report.threshold)
    verdict_style = ParagraphStyle("verdict_colour", parent=styles.verdict, textColor=accent)
    number_style = ParagraphStyle("number_colour", parent=styles.big_number, textColor=accent)

    left = [
        Paragraph(verdict, verdict_style),
        Spacer(1, 1.5 * mm),
        Paragraph(markup(finding_sentence(report.probability, report.threshold, report.label)), styles.body),
    ]
    right = [
        Paragraph(markup(shown_probability), number_style),
        Paragraph("probability of haemorrhage", styles.muted_right),
        Spacer(1, 1 * mm),
        Paragraph(f"Decision threshold: <b>{markup(shown_threshold)}</b>", styles.muted_right),
    ]
    if report.label == Label.OUT_OF_SCOPE:
        right = [
            Paragraph("&ndash;", number_style),
            Paragraph("no haemorrhage assessment", styles.muted_right),
        ]
    table = verdict_box(left, right, accent, tint, number_width=48 * mm)
    flowables: list[Flowable] = [Paragraph("Finding", styles.heading), table]
    if report.label != Label.OUT_OF_SCOPE:
        flowables += [Spacer(1, 1.5 * mm), operating_point_line(report.operating_point, styles)]
    if report.extra_findings:
        flowables += [
            Spacer(1, 2 * mm),
            bullets(report.extra_findings, styles.body),
        ]
    return flowables


def _images_section(report: SliceReport, styles: Styles) -> Flowable:
    """The original slice beside its Grad-CAM overlay, with the heat map's legend."""
    cell_width = (CONTENT_WIDTH - IMAGE_GAP) / 2
    original = fitted_image(report.original_png, "original_png", cell_width, IMAGE_MAX_HEIGHT)
    overlay = fitted_image(report.overlay_png, "overlay_png", cell_width, IMAGE_MAX_HEIGHT)
    table = ReportTable(
        [
            [original, "", overlay],
            [
                Paragraph("Original slice", styles.caption),
                "",
                Paragraph("Grad-CAM overlay: where the model looked", styles.caption),
            ],
            ["", "", HeatmapLegend(width=cell_width)],
        ],
        colWidths=[cell_width, IMAGE_GAP, cell_width],
    )
    table.setStyle(
        TableStyle(
            [
                *IMAGE_CELLS,
                ("TOPPADDING", (0, 0), (-1, -1), 1 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1 * mm),
            ]
        )
    )
    return KeepTogether([Paragraph("Images", styles.heading), table])
