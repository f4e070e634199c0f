"""The parts every report shows: header, banner, patient table, verdict box, model and limitations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import cv2
import numpy as np
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, Spacer, TableStyle

from app.core.labels import Label
from app.db import CARD_OPERATING_POINT
from app.services.reporting.fonts import FONT_REGULAR, markup, or_not_given
from app.services.reporting.layout import (
    BANNER_RED,
    BANNER_TEXT,
    CONTENT_WIDTH,
    LABEL_GREY,
    MUTED,
    NAVY,
    RULE_GREY,
    SECTION_GAP,
    TITLE,
    ReportTable,
    Styles,
    bullets,
    ruled_table_style,
)


@dataclass(frozen=True)
class ReportModelInfo:
    """The model that produced the finding.

    Attributes:
        name: model name, e.g. ``"ich-compact"``.
        version: model version, e.g. ``"1.0.0"``.
        metrics: ordered label -> formatted value, as shown in the report.
    """

    name: str
    version: str
    metrics: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class ReportDetails:
    """What every report has: its identity, its decision, its model, and the patient and study
    details (each shown as "not given" when None).

    Attributes:
        report_id: UUID string of the report.
        created_at: timezone-aware creation time; shown in UTC.
        probability: model probability of haemorrhage, in [0, 1].
        label: the decision (:class:`app.core.labels.Label`).
        threshold: the decision threshold, in [0, 1].
        model: the model that produced the finding.
        limitations: known limitations, one sentence each.
        source_format: what was analysed (``"png"``, ``"dicom"``, ``"DICOM series"`` ...).
        operating_point: where the threshold came from (the model card, or a site's operating point).
    """

    report_id: str
    created_at: datetime
    probability: float
    label: str
    threshold: float
    model: ReportModelInfo
    limitations: list[str]
    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    study_date: str | None = None
    requesting_clinician: str | None = None
    source_format: str | None = None
    operating_point: str = CARD_OPERATING_POINT


def validate(report: ReportDetails, allowed: list[Label], flagged_otherwise: bool = False) -> None:
    """Refuse a report whose numbers, label or time cannot be printed truthfully.

    Args:
        report: the report to check.
        allowed: the labels this kind of report may carry.
        flagged_otherwise: a criterion other than the probability flagged it (a study's outline),
            so a positive label under the threshold is true.

    Raises:
        ValueError: the probability or threshold is outside [0, 1], the label is not allowed or
            contradicts the probability and threshold, or ``created_at`` has no time zone.
    """
    for name, value in (("probability", report.probability), ("threshold", report.threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    if report.label not in allowed:
        raise ValueError(f"label must be one of {', '.join(map(repr, allowed))}, got {report.label!r}.")
    if report.label == Label.HEMORRHAGE and report.probability < report.threshold and not flagged_otherwise:
        raise ValueError(
            f"label {report.label!r} contradicts probability {report.probability} below "
            f"threshold {report.threshold}."
        )
    if report.label == Label.NO_HEMORRHAGE and report.probability > report.threshold:
        raise ValueError(
            f"label {report.label!r} contradicts probability {report.probability} above "
            f"threshold {report.threshold}."
        )
    if report.created_at.tzinfo is None or report.created_at.utcoffset() is None:
        raise ValueError(
            f"created_at must be timezone-aware, got naive {report.created_at.isoformat()}; "
            "use datetime.now(UTC)."
        )


def _header(report: ReportDetails, created_utc: datetime, styles: Styles, subtitle: str) -> Flowable:
    """The title and subtitle on the left, the report's id and creation time on the right."""
    left = [
        Paragraph(TITLE, styles.title),
        Paragraph(subtitle, styles.muted),
    ]
    right = [
        Paragraph(f"Report ID: {markup(report.report_id)}", styles.muted_right),
        Paragraph(f"Created: {created_utc:%Y-%m-%d %H:%M:%S} UTC", styles.muted_right),
    ]
    table = ReportTable([[left, right]], colWidths=[CONTENT_WIDTH * 0.58, CONTENT_WIDTH * 0.42])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                ("LEFTPADDING", (0, 0), (0, -1), 0),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2 * mm),
                ("LINEBELOW", (0, 0), (-1, -1), 1.2, NAVY),
            ]
        )
    )
    return table


def _banner(styles: Styles) -> Flowable:
    """The red "Not for clinical use" band across the page."""
    table = ReportTable([[Paragraph(BANNER_TEXT, styles.banner)]], colWidths=[CONTENT_WIDTH])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), BANNER_RED),
                ("TOPPADDING", (0, 0), (-1, -1), 2.2 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2 * mm),
            ]
        )
    )
    return table


def _patient_section(report: ReportDetails, source_text: str | None, styles: Styles) -> list[Flowable]:
    """The patient and study details in two columns, "not given" where one is missing."""
    fields = [
        ("Patient name", report.patient_name),
        ("Patient ID", report.patient_id),
        ("Study description", report.study_description),
        ("Study date", report.study_date),
        ("Requesting clinician", report.requesting_clinician),
        ("Source format", source_text),
    ]
    cells = [
        (Paragraph(label, styles.cell_label), Paragraph(or_not_given(value), styles.cell_value))
        for label, value in fields
    ]
    # Two label/value pairs per row keep the table short.
    rows = [[*cells[index], *cells[index + 1]] for index in range(0, len(cells), 2)]
    label_width = 30 * mm
    value_width = CONTENT_WIDTH / 2 - label_width
    table = ReportTable(rows, colWidths=[label_width, value_width, label_width, value_width])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (0, -1), LABEL_GREY),
                ("BACKGROUND", (2, 0), (2, -1), LABEL_GREY),
                ("BOX", (0, 0), (-1, -1), 0.5, RULE_GREY),
                ("INNERGRID", (0, 0), (-1, -1), 0.5, RULE_GREY),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.3 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.3 * mm),
            ]
        )
    )
    return [Paragraph("Patient and study", styles.heading), table]


def opening_sections(
    report: ReportDetails, created_utc: datetime, subtitle: str, source_text: str | None, styles: Styles
) -> list[Flowable]:
    """What every report starts with: the header, the banner and the patient table."""
    return [
        _header(report, created_utc, styles, subtitle),
        Spacer(1, 3 * mm),
        _banner(styles),
        Spacer(1, SECTION_GAP),
        *_patient_section(report, source_text, styles),
        Spacer(1, SECTION_GAP),
    ]


def closing_sections(model: ReportModelInfo, limitations: list[str], styles: Styles) -> list[Flowable]:
    """What every report ends with: the model and its limitations."""
    return [
        *_model_section(model, styles),
        Spacer(1, SECTION_GAP),
        *_limitations_section(limitations, styles),
    ]


def operating_point_line(operating_point: str, styles: Styles) -> Flowable:
    """Which operating point set the threshold: the model card's, or the one the site chose."""
    return Paragraph(f"Operating point: <b>{markup(operating_point)}</b>", styles.muted)


def verdict_box(
    left: list[Flowable], right: list[Flowable], accent: colors.Color, tint: colors.Color, number_width: float
) -> Flowable:
    """The finding in a tinted box with an accent bar: the verdict on the left, the numbers on the right."""
    table = ReportTable([[left, right]], colWidths=[CONTENT_WIDTH - number_width, number_width])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), tint),
                ("LINEBEFORE", (0, 0), (0, -1), 3, accent),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LEFTPADDING", (0, 0), (0, -1), 4 * mm),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 4 * mm),
                ("TOPPADDING", (0, 0), (-1, -1), 3 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3 * mm),
            ]
        )
    )
    return table


def _model_section(model: ReportModelInfo, styles: Styles) -> list[Flowable]:
    """The model's name, version and headline test metrics."""
    heading = Paragraph(
        f"Model: {markup(model.name)} <font color='#5A6570'>version {markup(model.version)}</font>",
        styles.heading,
    )
    if not model.metrics:
        return [heading, Paragraph("<i>No metrics recorded for this model.</i>", styles.body)]
    rows = [[Paragraph("Metric", styles.cell_label), Paragraph("Value", styles.cell_label)]]
    rows += [
        [Paragraph(markup(label), styles.small), Paragraph(markup(value), styles.small)]
        for label, value in model.metrics.items()
    ]
    table = ReportTable(rows, colWidths=[CONTENT_WIDTH * 0.55, CONTENT_WIDTH * 0.45], repeatRows=1)
    table.setStyle(ruled_table_style())
    return [heading, table]


def _limitations_section(limitations: list[str], styles: Styles) -> list[Flowable]:
    """The model's known limitations, one bullet each."""
    heading = Paragraph("Limitations", styles.heading)
    if not limitations:
        return [heading, Paragraph("<i>None recorded.</i>", styles.body)]
    return [heading, bullets(limitations, styles.small)]


def _jet_colours(steps: int) -> list[colors.Color]:
    """The colours of OpenCV's JET map, which the Grad-CAM overlay uses, from low to high."""
    levels = np.linspace(0, 255, steps).round().astype(np.uint8).reshape(-1, 1)
    bgr = cv2.applyColorMap(levels, cv2.COLORMAP_JET).reshape(-1, 3)
    return [colors.Color(red / 255, green / 255, blue / 255) for blue, green, red in bgr.tolist()]


class HeatmapLegend(Flowable):
    """Colour bar from low to high attention, and the meaning of the white outline."""

    _BAR_HEIGHT = 3 * mm
    _STEPS = 64

    def __init__(self, width: float) -> None:
        super().__init__()
        self.width = width
        self.height = 9.5 * mm

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        canvas = self.canv
        font_size = 7
        canvas.setFont(FONT_REGULAR, font_size)
        canvas.setFillColor(MUTED)
        low_text, high_text = "Low attention", "High attention"
        low_width = canvas.stringWidth(low_text, FONT_REGULAR, font_size)
        high_width = canvas.stringWidth(high_text, FONT_REGULAR, font_size)
        bar_width = min(45 * mm, self.width - low_width - high_width - 4 * mm)
        total = low_width + 2 * mm + bar_width + 2 * mm + high_width
        x = (self.width - total) / 2
        bar_y = self.height - self._BAR_HEIGHT
        text_y = bar_y + (self._BAR_HEIGHT - font_size * 0.7) / 2
        canvas.drawString(x, text_y, low_text)
        bar_x = x + low_width + 2 * mm
        step_width = bar_width / self._STEPS
        for index, colour in enumerate(_jet_colours(self._STEPS)):
            canvas.setFillColor(colour)
            # Overlap neighbours slightly so that no hairline gaps show between the strips.
            canvas.rect(
                bar_x + index * step_width, bar_y, step_width + 0.3, self._BAR_HEIGHT, stroke=0, fill=1
            )
        canvas.setStrokeColor(RULE_GREY)
        canvas.setLineWidth(0.4)
        canvas.rect(bar_x, bar_y, bar_width, self._BAR_HEIGHT, stroke=1, fill=0)
        canvas.setFillColor(MUTED)
        canvas.drawString(bar_x + bar_width + 2 * mm, text_y, high_text)

        # A white ring on a dark swatch shows what the outline looks like on the image.
        outline_text = "White outline: most activated region"
        swatch = 3 * mm
        outline_width = canvas.stringWidth(outline_text, FONT_REGULAR, font_size)
        swatch_x = (self.width - swatch - 1.5 * mm - outline_width) / 2
        canvas.setFillColor(colors.HexColor("#202428"))
        canvas.rect(swatch_x, 0, swatch, swatch, stroke=0, fill=1)
        canvas.setStrokeColor(colors.white)
        canvas.setLineWidth(0.8)
        canvas.circle(swatch_x + swatch / 2, swatch / 2, swatch * 0.3, stroke=1, fill=0)
        canvas.setFillColor(MUTED)
        canvas.drawString(swatch_x + swatch + 1.5 * mm, (swatch - font_size * 0.7) / 2, outline_text)
