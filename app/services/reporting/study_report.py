"""The PDF report on a whole CT study: the study decision, the slice probabilities and the key slices."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Paragraph, Spacer

from app.core.labels import Label
from app.core.wording import VERDICTS, format_percent, percent_pair, study_decision_text
from app.services.reporting.fonts import markup
from app.services.reporting.layout import (
    CONTENT_WIDTH,
    IMAGES_PER_ROW,
    NEGATIVE,
    NEGATIVE_TINT,
    POSITIVE,
    POSITIVE_TINT,
    ROW_CELL_WIDTH,
    SECTION_GAP,
    TITLE,
    Styles,
    build_pdf,
    fitted_image,
    image_row,
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


@dataclass(frozen=True)
class KeySlice:
    """A slice shown in the study report: one of the most probable.

    Attributes:
        index: position of the slice in anatomical order, from 0.
        probability: the slice's probability of haemorrhage.
        position_mm: its position along the slice normal, when known.
        overlay_png: PNG of its Grad-CAM overlay.
    """

    index: int
    probability: float
    position_mm: float | None
    overlay_png: bytes


@dataclass(frozen=True)
class StudyReport(ReportDetails):
    """Everything the report on a whole study shows: :class:`ReportDetails` (its
    ``probability`` is the study's, the aggregation of the slices', its ``label``
    ``"hemorrhage"`` or ``"no_hemorrhage"``, its ``threshold`` and ``operating_point`` the study
    decision's), and

    Attributes:
        aggregation: how slice probabilities became the study's (``"max"``, ``"top3_mean"`` ...).
        slice_probabilities: each slice's probability in anatomical order.
        slice_threshold: the model's slice threshold, drawn on the chart.
        key_slices: the most probable slices with their overlays.
        skipped_count: uploaded objects that were not analysed.
        segmentation: volumes and outlines by subtype, when the slices were segmented.
        decision_rule: how the study decision is made and what the rule measured on held-out
            patients, one sentence each (``app.core.wording.study_rule_sentences``).
        criteria: which criterion of a rule with the outline criterion flagged the study
            (``app.core.wording.study_criteria_sentence``).
        flagged_by_outline: the outline criterion alone flagged the study, so its label is
            ``"hemorrhage"`` with a probability under the threshold.
    """

    aggregation: str
    slice_probabilities: list[float]
    slice_threshold: float
    key_slices: list[KeySlice]
    skipped_count: int = 0
    segmentation: SegmentationSection | None = None
    decision_rule: list[str] = field(default_factory=list)
    criteria: str | None = None
    flagged_by_outline: bool = False


def study_decision_sentence(report: StudyReport) -> str:
    """The plain-language study decision, naming the aggregation and the key slice."""
    return study_decision_text(
        report.probability,
        report.threshold,
        report.label,
        report.aggregation,
        len(report.slice_probabilities),
        report.key_slices[0].index if report.key_slices else None,
        report.flagged_by_outline,
    )


def render_study_report(report: StudyReport) -> bytes:
    """Render the report on a whole study as an A4 PDF.

    It has the slice report's header, banner, patient table and footer, then the study decision,
    a chart of the slice probabilities with the threshold, and the key slices' overlays.

    Raises:
        ValueError: as :func:`render_slice_report`, or with no slice probabilities.
    """
    validate(report, [Label.HEMORRHAGE, Label.NO_HEMORRHAGE], flagged_otherwise=report.flagged_by_outline)
    if not report.slice_probabilities:
        raise ValueError("A study report needs at least one slice probability.")
    created_utc = report.created_at.astimezone(UTC)
    styles = Styles()
    story: list[Flowable] = [
        *opening_sections(
            report,
            created_utc,
            "Whole CT study \u00b7 ICH Detect automated analysis",
            report.source_format or None,
            styles,
        ),
        *_study_finding_section(report, styles),
        Spacer(1, SECTION_GAP),
        _chart_section(report, styles),
        Spacer(1, SECTION_GAP),
        _key_slices_section(report, styles),
        Spacer(1, SECTION_GAP),
        *outlines_section(report.segmentation, styles),
        *closing_sections(report.model, report.limitations, styles),
    ]
    return build_pdf(
        story,
        f"{TITLE} - study report {report.report_id}",
        report.report_id,
        f"{report.model.name} {report.model.version}",
        report.segmentation.model_line if report.segmentation is not None else None,
    )


def slice_probability_chart(
    probabilities: list[float],
    threshold: float,
    key_slices: list[int],
    width_inches: float = 7.0,
    height_inches: float = 2.4,
) -> bytes:
    """PNG of slice probability against slice number, with the threshold and the key slices marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_inches, height_inches), dpi=150)
    axes = figure.add_subplot()
    numbers = np.arange(1, len(probabilities) + 1)
    axes.plot(numbers, probabilities, color="#1F3A5F", marker="o", markersize=3, linewidth=1.2)
    axes.axhline(threshold, color="#A4161A", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    if key_slices:
        axes.scatter(
            [index + 1 for index in key_slices],
            [probabilities[index] for index in key_slices],
            s=40,
            facecolors="none",
            edgecolors="#A4161A",
            linewidths=1.4,
            label="key slices",
            zorder=3,
        )
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlim(0.5, len(probabilities) + 0.5)
    axes.set_xlabel("Slice (inferior to superior)")
    axes.set_ylabel("P(haemorrhage)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=7, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _study_finding_section(report: StudyReport, styles: Styles) -> list[Flowable]:
    """The study verdict and decision in words, the numbers behind it, and skipped uploads."""
    positive = report.label == Label.HEMORRHAGE
    accent = POSITIVE if positive else NEGATIVE
    tint = POSITIVE_TINT if positive else NEGATIVE_TINT
    verdict = VERDICTS[report.label]
    shown_probability, shown_threshold = percent_pair(report.probability, report.threshold)
    verdict_style = ParagraphStyle("verdict_colour", parent=styles.verdict, textColor=accent)
    number_style = ParagraphStyle("number_colour", parent=styles.big_number, textColor=accent)
    count = len(report.slice_probabilities)
    left = [
        Paragraph(verdict, verdict_style),
        Spacer(1, 1.5 * mm),
        Paragraph(markup(study_decision_sentence(report)), styles.body),
    ]
    right = [
        Paragraph(markup(shown_probability), number_style),
        Paragraph("study probability of haemorrhage", styles.muted_right),
        Spacer(1, 1 * mm),
        Paragraph(f"Study threshold: <b>{markup(shown_threshold)}</b>", styles.muted_right),
        Paragraph(f"Slices analysed: <b>{count}</b>", styles.muted_right),
        Paragraph(f"Aggregation: <b>{markup(report.aggregation)}</b>", styles.muted_right),
    ]
    table = verdict_box(left, right, accent, tint, number_width=52 * mm)
    flowables: list[Flowable] = [
        Paragraph("Study decision", styles.heading),
        table,
        Spacer(1, 1.5 * mm),
        operating_point_line(report.operating_point, styles),
    ]
    if report.criteria:
        flowables += [Spacer(1, 1.5 * mm), Paragraph(markup(report.criteria), styles.body)]
    if report.decision_rule:
        flowables += [
            Spacer(1, 1.5 * mm),
            Paragraph(
                "<b>How this study decision is made.</b> " + markup(" ".join(report.decision_rule)),
                styles.body,
            ),
        ]
    if report.skipped_count:
        flowables += [
            Spacer(1, 2 * mm),
            Paragraph(
                f"{report.skipped_count} uploaded object(s) were not analysed (not CT image slices of "
                "this series); they are listed in the API result.",
                styles.muted,
            ),
        ]
    return flowables


def _chart_section(report: StudyReport, styles: Styles) -> Flowable:
    """The chart of slice probabilities with the threshold and the key slices."""
    chart = slice_probability_chart(
        report.slice_probabilities, report.threshold, [item.index for item in report.key_slices]
    )
    image = fitted_image(chart, "chart", CONTENT_WIDTH, 60 * mm)
    caption = Paragraph(
        "Probability of haemorrhage on each slice; dashed line: study threshold; circles: key slices.",
        styles.caption,
    )
    return KeepTogether([Paragraph("Slice probabilities", styles.heading), image, caption])


def _key_slices_section(report: StudyReport, styles: Styles) -> Flowable:
    """The key slices' overlays in a row of three, with their probabilities and the heat map's legend."""
    heading = Paragraph("Key slices (most likely haemorrhage)", styles.heading)
    if not report.key_slices:
        return KeepTogether([heading, Paragraph("<i>None.</i>", styles.body)])
    columns, cell_width = IMAGES_PER_ROW, ROW_CELL_WIDTH
    images: list[Any] = []
    captions: list[Any] = []
    for item in report.key_slices[:columns]:
        images.append(fitted_image(item.overlay_png, f"key slice {item.index + 1}", cell_width, 55 * mm))
        position = f", {item.position_mm:.1f} mm" if item.position_mm is not None else ""
        captions.append(
            Paragraph(
                f"Slice {item.index + 1}{markup(position)}: {markup(format_percent(item.probability, 1))}",
                styles.caption,
            )
        )
    # Empty cells keep one or two key slices at the width and place they have in a full row.
    images += [""] * (columns - len(images))
    captions += [""] * (columns - len(captions))
    table = image_row(images, captions, cell_width)
    return KeepTogether([heading, table, Spacer(1, 1 * mm), HeatmapLegend(width=CONTENT_WIDTH)])
