"""The PDF diagnostic reports: one CT slice, or a whole CT study.

The report is decision support, not a diagnosis: every page says "Not for clinical use" and carries
the model name and version (and the segmentation model's, when outlines are shown), as MONAI Deploy
stamps its model information on each output.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import cv2
import numpy as np
from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from app.core.labels import Label

logger = logging.getLogger(__name__)

# The thresholds written in the model card, as opposed to an operating point a site chose.
CARD_OPERATING_POINT = "model card default"
OUT_OF_SCOPE_VERDICT = "Not a head CT slice"
NOT_GIVEN = "not given"

_TITLE = "Intracranial haemorrhage analysis"
_BANNER = "NOT FOR CLINICAL USE \u2013 decision support only, not a diagnosis"

_PAGE_WIDTH, _PAGE_HEIGHT = A4
_MARGIN = 15 * mm
_FOOTER_MARGIN = 18 * mm
_CONTENT_WIDTH = _PAGE_WIDTH - 2 * _MARGIN
_IMAGE_GAP = 6 * mm
_SECTION_GAP = 3.5 * mm
_IMAGE_MAX_HEIGHT = 62 * mm
# Longest side, in pixels, of an embedded image: about 300 dpi at the printed size.
_IMAGE_MAX_PIXELS = 1024

_NAVY = colors.HexColor("#1F3A5F")
_BANNER_RED = colors.HexColor("#A4161A")
_POSITIVE = colors.HexColor("#A4161A")
_POSITIVE_TINT = colors.HexColor("#FCEBEA")
_NEGATIVE = colors.HexColor("#1F3A5F")
_NEGATIVE_TINT = colors.HexColor("#EAF0F7")
_LABEL_GREY = colors.HexColor("#F1F3F5")
_RULE_GREY = colors.HexColor("#C7CCD1")
_MUTED = colors.HexColor("#5A6570")

# Embedded TrueType fonts, so that a name in Greek, Cyrillic, Arabic or Chinese prints as written
# (the built-in Helvetica has Latin letters only and prints the others as empty boxes). Characters
# that DejaVu Sans lacks (Chinese, Japanese, Korean) are set in WenQuanYi Micro Hei.
FONT_REGULAR = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_CJK = "WenQuanYiMicroHei"
# DejaVu Sans comes with matplotlib (a dependency of the service; found without importing it),
# WenQuanYi Micro Hei from Debian's fonts-wqy-microhei.
_MATPLOTLIB_FONTS = (
    Path(next(iter(importlib.util.find_spec("matplotlib").submodule_search_locations or [""])))  # type: ignore[union-attr]
    / "mpl-data"
    / "fonts"
    / "ttf"
)
FONT_FILES: dict[str, tuple[Path, str]] = {
    FONT_REGULAR: (_MATPLOTLIB_FONTS / "DejaVuSans.ttf", "matplotlib"),
    FONT_BOLD: (_MATPLOTLIB_FONTS / "DejaVuSans-Bold.ttf", "matplotlib"),
    FONT_CJK: (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"), "fonts-wqy-microhei"),
}

# C0 control characters other than tab and newline are not text and would corrupt the PDF strings.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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


@dataclass(frozen=True)
class SubtypeLine:
    """One haemorrhage subtype in the outlines section.

    Attributes:
        title: the subtype's name as shown, e.g. ``"Subdural"``.
        colour: RGB colour of its outline.
        probability: the subtype head's probability (the highest over the slices for a study).
        amount: the outlined area (slice) or volume (study), formatted.
    """

    title: str
    colour: tuple[int, int, int]
    probability: float
    amount: str


@dataclass(frozen=True)
class SegmentationSection:
    """The outlines of possible haemorrhage by subtype, as the report shows them.

    Attributes:
        model: the segmentation model (its metrics are not shown).
        amount_title: column title of ``SubtypeLine.amount`` (``"Outlined area"``, ``"Volume"``).
        subtypes: one line per subtype, in class order.
        summary: sentences on the totals (area, or volume with ABC/2, or why there is none).
        images: ``(PNG of the outlines over the slice, caption)``, at most three.
        notes: what a reader must know about the outlines (training data, measured Dice).
    """

    model: ReportModelInfo
    amount_title: str
    subtypes: list[SubtypeLine]
    summary: list[str] = field(default_factory=list)
    images: list[tuple[bytes, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SliceReport:
    """Everything the report on one slice shows.

    Attributes:
        report_id: UUID string of the report.
        created_at: timezone-aware creation time; shown in UTC.
        probability: model probability of haemorrhage, in [0, 1].
        label: ``"hemorrhage"``, ``"no_hemorrhage"`` or ``"out_of_scope"`` (not a head CT slice).
        threshold: the decision threshold the slice was decided with, in [0, 1].
        original_png: PNG of the original slice (greyscale or RGB).
        overlay_png: PNG of the Grad-CAM overlay (RGB).
        model: the model that produced the finding.
        limitations: known limitations, one sentence each.
        patient_name: shown as "not given" when None.
        patient_id: shown as "not given" when None.
        study_description: shown as "not given" when None.
        study_date: shown as "not given" when None.
        requesting_clinician: shown as "not given" when None.
        source_format: format of the upload (``"png"``, ``"jpeg"``, ``"dicom"``).
        extra_findings: further notes shown under the finding.
        segmentation: the outlines by subtype, when the slice was segmented.
        operating_point: where the threshold came from (the model card, or a site's operating point).
    """

    report_id: str
    created_at: datetime
    probability: float
    label: str
    threshold: float
    original_png: bytes
    overlay_png: bytes
    model: ReportModelInfo
    limitations: list[str]
    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    study_date: str | None = None
    requesting_clinician: str | None = None
    source_format: str | None = None
    extra_findings: list[str] = field(default_factory=list)
    segmentation: SegmentationSection | None = None
    operating_point: str = CARD_OPERATING_POINT


def _build_pdf(
    story: list[Any],
    title: str,
    model: ReportModelInfo,
    report_id: str,
    segmentation: SegmentationSection | None = None,
) -> bytes:
    """Lay out ``story`` on A4 with the standard margins, metadata and footer."""
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_FOOTER_MARGIN,
        title=title,
        author="ICH Detect",
        subject="Decision support only. Not for clinical use.",
        creator="ICH Detect",
        initialFontName=FONT_REGULAR,
    )
    footer = _Footer(
        model=f"{model.name} {model.version}",
        report_id=report_id,
        segmentation_model=(
            f"{segmentation.model.name} {segmentation.model.version}" if segmentation is not None else None
        ),
    )
    document.build(story, canvasmaker=partial(_FooterCanvas, footer=footer))
    return buffer.getvalue()


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
    _validate(report)
    created_utc = report.created_at.astimezone(UTC)
    styles = _Styles()
    story: list[Flowable] = [
        _header(report, created_utc, styles),
        Spacer(1, 3 * mm),
        _banner(styles),
        Spacer(1, _SECTION_GAP),
        *_patient_section(report, styles),
        Spacer(1, _SECTION_GAP),
        *_finding_section(report, styles),
        Spacer(1, _SECTION_GAP),
        _images_section(report, styles),
        Spacer(1, _SECTION_GAP),
        *_segmentation_section(report.segmentation, styles),
        *_model_section(report.model, styles),
        Spacer(1, _SECTION_GAP),
        *_limitations_section(report.limitations, styles),
    ]

    pdf = _build_pdf(
        story, f"{_TITLE} - report {report.report_id}", report.model, report.report_id, report.segmentation
    )
    logger.debug("Rendered report %s (%d bytes)", report.report_id, len(pdf))
    return pdf


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
class StudyReport:
    """Everything the report on a whole study shows.

    Attributes:
        report_id: UUID string of the study analysis.
        created_at: timezone-aware creation time; shown in UTC.
        probability: study probability of haemorrhage (the aggregation of the slices'), in [0, 1].
        label: ``"hemorrhage"`` or ``"no_hemorrhage"``.
        threshold: the study decision threshold, in [0, 1].
        aggregation: how slice probabilities became the study's (``"max"``, ``"top3_mean"`` ...).
        slice_probabilities: each slice's probability in anatomical order.
        slice_threshold: the model's slice threshold, drawn on the chart.
        key_slices: the most probable slices with their overlays.
        model: the model that produced the finding.
        limitations: known limitations, one sentence each.
        skipped_count: uploaded objects that were not analysed.
        segmentation: volumes and outlines by subtype, when the slices were segmented.
        operating_point: where the study threshold came from (the model card, or a site's).
    """

    report_id: str
    created_at: datetime
    probability: float
    label: str
    threshold: float
    aggregation: str
    slice_probabilities: list[float]
    slice_threshold: float
    key_slices: list[KeySlice]
    model: ReportModelInfo
    limitations: list[str]
    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    study_date: str | None = None
    requesting_clinician: str | None = None
    source_format: str | None = None
    skipped_count: int = 0
    segmentation: SegmentationSection | None = None
    operating_point: str = CARD_OPERATING_POINT


AGGREGATION_TEXT = {
    "max": "the highest slice probability",
    "top3_mean": "the mean of the three highest slice probabilities",
    "noisy_or": "the probability that at least one slice is positive (noisy-OR)",
}


def study_decision_sentence(report: StudyReport) -> str:
    """The plain-language study decision, naming the aggregation and the key slice."""
    shown_probability, shown_threshold = _percent_pair(report.probability, report.threshold)
    method = AGGREGATION_TEXT.get(report.aggregation, report.aggregation)
    count = len(report.slice_probabilities)
    lead = (
        f"Study probability {shown_probability} ({method}, aggregation '{report.aggregation}') "
        f"over {count} slice{'s' if count != 1 else ''}, against a study threshold of {shown_threshold}."
    )
    if report.label == Label.HEMORRHAGE:
        where = f" Most likely on slice {report.key_slices[0].index + 1}." if report.key_slices else ""
        return f"{lead} Haemorrhage suspected: a radiologist should review this study promptly.{where}"
    return (
        f"{lead} No haemorrhage detected. A negative result does not exclude haemorrhage; the study "
        "still needs review by a radiologist."
    )


def render_study_report(report: StudyReport) -> bytes:
    """Render the report on a whole study as an A4 PDF.

    It has the slice report's header, banner, patient table and footer, then the study decision,
    a chart of the slice probabilities with the threshold, and the key slices' overlays.

    Raises:
        ValueError: as :func:`render_slice_report`, or with no slice probabilities.
    """
    _validate(report)
    if not report.slice_probabilities:
        raise ValueError("A study report needs at least one slice probability.")
    created_utc = report.created_at.astimezone(UTC)
    styles = _Styles()
    story: list[Flowable] = [
        _header(report, created_utc, styles, "Whole CT study \u00b7 ICH Detect automated analysis"),
        Spacer(1, 3 * mm),
        _banner(styles),
        Spacer(1, _SECTION_GAP),
        *_patient_section(report, styles),
        Spacer(1, _SECTION_GAP),
        *_study_finding_section(report, styles),
        Spacer(1, _SECTION_GAP),
        _chart_section(report, styles),
        Spacer(1, _SECTION_GAP),
        _key_slices_section(report, styles),
        Spacer(1, _SECTION_GAP),
        *_segmentation_section(report.segmentation, styles),
        *_model_section(report.model, styles),
        Spacer(1, _SECTION_GAP),
        *_limitations_section(report.limitations, styles),
    ]
    return _build_pdf(
        story,
        f"{_TITLE} - study report {report.report_id}",
        report.model,
        report.report_id,
        report.segmentation,
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


def _study_finding_section(report: StudyReport, styles: _Styles) -> list[Flowable]:
    positive = report.label == Label.HEMORRHAGE
    accent = _POSITIVE if positive else _NEGATIVE
    tint = _POSITIVE_TINT if positive else _NEGATIVE_TINT
    verdict = "Haemorrhage suspected" if positive else "No haemorrhage detected"
    shown_probability, shown_threshold = _percent_pair(report.probability, report.threshold)
    verdict_style = ParagraphStyle("verdict_colour", parent=styles.verdict, textColor=accent)
    number_style = ParagraphStyle("number_colour", parent=styles.big_number, textColor=accent)
    count = len(report.slice_probabilities)
    left = [
        Paragraph(verdict, verdict_style),
        Spacer(1, 1.5 * mm),
        Paragraph(_markup(study_decision_sentence(report)), styles.body),
    ]
    right = [
        Paragraph(_markup(shown_probability), number_style),
        Paragraph("study probability of haemorrhage", styles.muted_right),
        Spacer(1, 1 * mm),
        Paragraph(f"Study threshold: <b>{_markup(shown_threshold)}</b>", styles.muted_right),
        Paragraph(f"Slices analysed: <b>{count}</b>", styles.muted_right),
        Paragraph(f"Aggregation: <b>{_markup(report.aggregation)}</b>", styles.muted_right),
    ]
    number_width = 52 * mm
    table = _Table([[left, right]], colWidths=[_CONTENT_WIDTH - number_width, number_width])
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
    flowables: list[Flowable] = [
        Paragraph("Study decision", styles.heading),
        table,
        Spacer(1, 1.5 * mm),
        _operating_point_line(report.operating_point, styles),
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


def _chart_section(report: StudyReport, styles: _Styles) -> Flowable:
    chart = slice_probability_chart(
        report.slice_probabilities, report.threshold, [item.index for item in report.key_slices]
    )
    image = _fitted_image(chart, "chart", _CONTENT_WIDTH, 60 * mm)
    caption = Paragraph(
        "Probability of haemorrhage on each slice; dashed line: study threshold; circles: key slices.",
        styles.caption,
    )
    return KeepTogether([Paragraph("Slice probabilities", styles.heading), image, caption])


def _key_slices_section(report: StudyReport, styles: _Styles) -> Flowable:
    heading = Paragraph("Key slices (most likely haemorrhage)", styles.heading)
    if not report.key_slices:
        return KeepTogether([heading, Paragraph("<i>None.</i>", styles.body)])
    columns = 3
    cell_width = (_CONTENT_WIDTH - (columns - 1) * _IMAGE_GAP) / columns
    images: list[Any] = []
    captions: list[Any] = []
    for item in report.key_slices[:columns]:
        images.append(_fitted_image(item.overlay_png, f"key slice {item.index + 1}", cell_width, 55 * mm))
        position = f", {item.position_mm:.1f} mm" if item.position_mm is not None else ""
        captions.append(
            Paragraph(
                f"Slice {item.index + 1}{_markup(position)}: {_markup(format_percent(item.probability, 1))}",
                styles.caption,
            )
        )
    while len(images) < columns:
        images.append("")
        captions.append("")
    row_images: list[Any] = []
    row_captions: list[Any] = []
    widths: list[float] = []
    for index in range(columns):
        if index:
            row_images.append("")
            row_captions.append("")
            widths.append(_IMAGE_GAP)
        row_images.append(images[index])
        row_captions.append(captions[index])
        widths.append(cell_width)
    table = _Table([row_images, row_captions], colWidths=widths)
    table.setStyle(
        TableStyle(
            [
                ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                ("VALIGN", (0, 0), (-1, 0), "MIDDLE"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return KeepTogether([heading, table, Spacer(1, 1 * mm), _HeatmapLegend(width=_CONTENT_WIDTH)])


def _validate(report: SliceReport | StudyReport) -> None:
    for name, value in (("probability", report.probability), ("threshold", report.threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    allowed = [Label.HEMORRHAGE, Label.NO_HEMORRHAGE]
    if isinstance(report, SliceReport):
        allowed.append(Label.OUT_OF_SCOPE)
    if report.label not in allowed:
        raise ValueError(f"label must be one of {', '.join(map(repr, allowed))}, got {report.label!r}.")
    if report.label == Label.HEMORRHAGE and report.probability < report.threshold:
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


def _markup(text: str) -> str:
    """Escape user text for reportlab's paragraph markup, keeping its line breaks."""
    cleaned = _CONTROL_CHARACTERS.sub("", text)
    return _with_fallback_font(cleaned).replace("\n", "<br/>")


def _or_not_given(text: str | None) -> str:
    if text is None or not text.strip():
        return f"<font color='#5A6570'>{NOT_GIVEN}</font>"
    return _markup(text)


def format_percent(value: float, decimals: int = 0) -> str:
    """Format a fraction as a percentage that never rounds a non-zero value to 0% or 100%.

    Args:
        value: fraction in [0, 1].
        decimals: digits after the decimal point.

    Returns:
        For example ``"87%"``, ``"<1%"`` or ``">99%"``.
    """
    percent = value * 100.0
    text = f"{percent:.{decimals}f}"
    smallest = 10.0**-decimals
    if 0.0 < percent and float(text) == 0.0:
        return f"<{smallest:g}%"
    if percent < 100.0 and float(text) == 100.0:
        return f">{100.0 - smallest:g}%"
    return f"{text}%"


def _percent_pair(probability: float, threshold: float) -> tuple[str, str]:
    """Probability and threshold as percentages, with a decimal when whole numbers would tie."""
    for decimals in (0, 1, 2):
        pair = format_percent(probability, decimals), format_percent(threshold, decimals)
        if pair[0] != pair[1] or probability == threshold:
            return pair
    return pair


def finding_sentence(probability: float, threshold: float, label: str) -> str:
    """The plain-language explanation of the finding.

    Args:
        probability: model probability of haemorrhage, in [0, 1].
        threshold: the model's decision threshold, in [0, 1].
        label: ``"hemorrhage"`` or ``"no_hemorrhage"``.

    Returns:
        One or two sentences of plain text.
    """
    if label == Label.OUT_OF_SCOPE:
        return (
            "The image does not look like a brain-window head CT slice, so no haemorrhage assessment "
            "was made; the model's output for it means nothing. Send an axial head CT slice."
        )
    shown_probability, shown_threshold = _percent_pair(probability, threshold)
    if label == Label.HEMORRHAGE:
        relation = "above" if probability > threshold else "at"
        return (
            f"The model's probability of {shown_probability} is {relation} its decision threshold of "
            f"{shown_threshold}; a radiologist should review this slice promptly."
        )
    relation = "below" if probability < threshold else "at"
    return (
        f"The model's probability of {shown_probability} is {relation} its decision threshold of "
        f"{shown_threshold}. A negative result does not exclude haemorrhage; the slice and the whole "
        "study still need review by a radiologist."
    )


class ReportFontsMissing(RuntimeError):
    """A font file the reports embed is not installed; the message names the Debian package."""


@cache
def register_fonts() -> None:
    """Register the report fonts with reportlab, once; the service calls it at start.

    Raises:
        ReportFontsMissing: a font file is missing. The service refuses to start rather than print
            names in other scripts as empty boxes.
    """
    missing = {package: path for path, package in FONT_FILES.values() if not path.is_file()}
    if missing:
        files = ", ".join(str(path) for path in missing.values())
        raise ReportFontsMissing(
            f"The PDF reports need the font files {files}; install them with "
            f"'apt-get install {' '.join(sorted(missing))}' (scripts/install-system-deps.sh)."
        )
    for name, (path, _) in FONT_FILES.items():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    # Only the upright faces are registered: <i> and <b><i> fall back to upright.
    pdfmetrics.registerFontFamily(
        FONT_REGULAR, normal=FONT_REGULAR, bold=FONT_BOLD, italic=FONT_REGULAR, boldItalic=FONT_BOLD
    )
    # One face only: the Chinese run of a bold line stays regular rather than falling back to Helvetica.
    pdfmetrics.registerFontFamily(
        FONT_CJK, normal=FONT_CJK, bold=FONT_CJK, italic=FONT_CJK, boldItalic=FONT_CJK
    )


@cache
def _regular_characters() -> frozenset[int]:
    """The code points that DejaVu Sans draws; the others are set in the CJK font."""
    register_fonts()
    return frozenset(pdfmetrics.getFont(FONT_REGULAR).face.charToGlyph)


def _rtl_strength(character: str) -> str:
    """'strong' for right-to-left letters, 'mark' for combining marks, 'neutral' for spaces and
    punctuation that take the direction around them, 'other' for the rest."""
    category = unicodedata.bidirectional(character)
    if category in ("R", "AL"):
        return "strong"
    if category == "NSM":
        return "mark"
    return "neutral" if category in ("WS", "ON", "CS", "ES") else "other"


def _visual_order(text: str) -> str:
    """``text`` with each right-to-left run (Arabic, Hebrew) reversed into the order it is drawn.

    reportlab draws characters left to right in the order given, and PDF text is stored in drawn
    order (text extraction turns right-to-left runs back). A run is a stretch from one
    right-to-left letter to the last, with the spaces and punctuation between them; combining
    marks stay after their letter. Letters are drawn in their isolated forms: reportlab joins
    Arabic letters only with its optional shaping packages.
    """
    result: list[str] = []
    index = 0
    while index < len(text):
        if _rtl_strength(text[index]) != "strong":
            result.append(text[index])
            index += 1
            continue
        end = index
        last_strong = index
        while end < len(text) and _rtl_strength(text[end]) in ("strong", "mark", "neutral"):
            if _rtl_strength(text[end]) == "strong":
                last_strong = end
            end += 1
        # Letters with their marks, then reversed; trailing spaces or punctuation stay outside.
        clusters: list[str] = []
        for character in text[index : last_strong + 1]:
            if _rtl_strength(character) == "mark" and clusters:
                clusters[-1] += character
            else:
                clusters.append(character)
        end = last_strong + 1
        while end < len(text) and _rtl_strength(text[end]) == "mark":
            clusters[-1] += text[end]
            end += 1
        result.extend(reversed(clusters))
        index = end
    return "".join(result)


def _with_fallback_font(text: str) -> str:
    """Escape ``text`` for paragraph markup, wrapping runs of characters DejaVu lacks in the CJK font."""
    covered = _regular_characters()
    runs: list[tuple[bool, list[str]]] = []
    for character in _visual_order(text):
        # Spaces and line breaks join the run around them, so a Chinese name stays one run.
        fallback = ord(character) not in covered and not character.isspace()
        if runs and (runs[-1][0] == fallback or character.isspace()):
            runs[-1][1].append(character)
        else:
            runs.append((fallback, [character]))
    return "".join(
        f'<font name="{FONT_CJK}">{escape("".join(part))}</font>' if fallback else escape("".join(part))
        for fallback, part in runs
    )


class _Table(Table):
    """A table whose cells start in the report's font, not in reportlab's default Helvetica."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT_REGULAR)]))


class _Styles:
    """Paragraph styles of the report, all in the embedded DejaVu Sans family."""

    def __init__(self) -> None:
        register_fonts()
        base = ParagraphStyle("base", fontName=FONT_REGULAR, fontSize=9, leading=11.5, textColor=colors.black)
        self.body = base
        self.small = ParagraphStyle("small", parent=base, fontSize=8, leading=10)
        self.muted = ParagraphStyle("muted", parent=self.small, textColor=_MUTED)
        self.muted_right = ParagraphStyle("muted_right", parent=self.muted, alignment=TA_RIGHT)
        self.title = ParagraphStyle(
            "title", parent=base, fontName=FONT_BOLD, fontSize=17, leading=21, textColor=_NAVY
        )
        self.heading = ParagraphStyle(
            "heading",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=10.5,
            leading=13,
            textColor=_NAVY,
            spaceAfter=2 * mm,
            keepWithNext=1,
        )
        self.banner = ParagraphStyle(
            "banner",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=10.5,
            leading=13,
            textColor=colors.white,
            alignment=TA_CENTER,
        )
        self.cell_label = ParagraphStyle("cell_label", parent=self.small, textColor=_MUTED)
        self.cell_value = ParagraphStyle("cell_value", parent=base)
        self.caption = ParagraphStyle("caption", parent=self.small, alignment=TA_CENTER, textColor=_MUTED)
        self.verdict = ParagraphStyle("verdict", parent=base, fontName=FONT_BOLD, fontSize=15, leading=18)
        self.big_number = ParagraphStyle(
            "big_number",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=20,
            leading=23,
            alignment=TA_RIGHT,
        )


def _header(
    report: SliceReport | StudyReport,
    created_utc: datetime,
    styles: _Styles,
    subtitle: str = "Single CT slice \u00b7 ICH Detect automated analysis",
) -> Flowable:
    left = [
        Paragraph(_TITLE, styles.title),
        Paragraph(subtitle, styles.muted),
    ]
    right = [
        Paragraph(f"Report ID: {_markup(report.report_id)}", styles.muted_right),
        Paragraph(f"Created: {created_utc:%Y-%m-%d %H:%M:%S} UTC", styles.muted_right),
    ]
    table = _Table([[left, right]], colWidths=[_CONTENT_WIDTH * 0.58, _CONTENT_WIDTH * 0.42])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                ("LEFTPADDING", (0, 0), (0, -1), 0),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2 * mm),
                ("LINEBELOW", (0, 0), (-1, -1), 1.2, _NAVY),
            ]
        )
    )
    return table


def _banner(styles: _Styles) -> Flowable:
    table = _Table([[Paragraph(_BANNER, styles.banner)]], colWidths=[_CONTENT_WIDTH])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), _BANNER_RED),
                ("TOPPADDING", (0, 0), (-1, -1), 2.2 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2 * mm),
            ]
        )
    )
    return table


def _patient_section(report: SliceReport | StudyReport, styles: _Styles) -> list[Flowable]:
    fields = [
        ("Patient name", report.patient_name),
        ("Patient ID", report.patient_id),
        ("Study description", report.study_description),
        ("Study date", report.study_date),
        ("Requesting clinician", report.requesting_clinician),
        ("Source format", _source_text(report)),
    ]
    cells = [
        (Paragraph(label, styles.cell_label), Paragraph(_or_not_given(value), styles.cell_value))
        for label, value in fields
    ]
    # Two label/value pairs per row keep the table short.
    rows = [[*cells[index], *cells[index + 1]] for index in range(0, len(cells), 2)]
    label_width = 30 * mm
    value_width = _CONTENT_WIDTH / 2 - label_width
    table = _Table(rows, colWidths=[label_width, value_width, label_width, value_width])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (0, -1), _LABEL_GREY),
                ("BACKGROUND", (2, 0), (2, -1), _LABEL_GREY),
                ("BOX", (0, 0), (-1, -1), 0.5, _RULE_GREY),
                ("INNERGRID", (0, 0), (-1, -1), 0.5, _RULE_GREY),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.3 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.3 * mm),
            ]
        )
    )
    return [Paragraph("Patient and study", styles.heading), table]


def _source_text(report: SliceReport | StudyReport) -> str | None:
    if not report.source_format:
        return None
    return report.source_format.upper() if isinstance(report, SliceReport) else report.source_format


def _finding_section(report: SliceReport, styles: _Styles) -> list[Flowable]:
    positive = report.label == Label.HEMORRHAGE
    accent = _POSITIVE if positive else _NEGATIVE
    tint = _POSITIVE_TINT if positive else _NEGATIVE_TINT
    verdict = "Haemorrhage suspected" if positive else "No haemorrhage detected"
    if report.label == Label.OUT_OF_SCOPE:
        accent, tint, verdict = _MUTED, _LABEL_GREY, OUT_OF_SCOPE_VERDICT
    shown_probability, shown_threshold = _percent_pair(report.probability, report.threshold)
    verdict_style = ParagraphStyle("verdict_colour", parent=styles.verdict, textColor=accent)
    number_style = ParagraphStyle("number_colour", parent=styles.big_number, textColor=accent)

    left = [
        Paragraph(verdict, verdict_style),
        Spacer(1, 1.5 * mm),
        Paragraph(_markup(finding_sentence(report.probability, report.threshold, report.label)), styles.body),
    ]
    right = [
        Paragraph(_markup(shown_probability), number_style),
        Paragraph("probability of haemorrhage", styles.muted_right),
        Spacer(1, 1 * mm),
        Paragraph(f"Decision threshold: <b>{_markup(shown_threshold)}</b>", styles.muted_right),
    ]
    if report.label == Label.OUT_OF_SCOPE:
        right = [
            Paragraph("&ndash;", number_style),
            Paragraph("no haemorrhage assessment", styles.muted_right),
        ]
    number_width = 48 * mm
    table = _Table(
        [[left, right]],
        colWidths=[_CONTENT_WIDTH - number_width, number_width],
    )
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
    flowables: list[Flowable] = [Paragraph("Finding", styles.heading), table]
    if report.label != Label.OUT_OF_SCOPE:
        flowables += [Spacer(1, 1.5 * mm), _operating_point_line(report.operating_point, styles)]
    if report.extra_findings:
        flowables += [
            Spacer(1, 2 * mm),
            _bullets(report.extra_findings, styles.body),
        ]
    return flowables


def _operating_point_line(operating_point: str, styles: _Styles) -> Flowable:
    """Which operating point set the threshold: the model card's, or the one the site chose."""
    return Paragraph(f"Operating point: <b>{_markup(operating_point)}</b>", styles.muted)


def _images_section(report: SliceReport, styles: _Styles) -> Flowable:
    cell_width = (_CONTENT_WIDTH - _IMAGE_GAP) / 2
    original = _fitted_image(report.original_png, "original_png", cell_width, _IMAGE_MAX_HEIGHT)
    overlay = _fitted_image(report.overlay_png, "overlay_png", cell_width, _IMAGE_MAX_HEIGHT)
    table = _Table(
        [
            [original, "", overlay],
            [
                Paragraph("Original slice", styles.caption),
                "",
                Paragraph("Grad-CAM overlay: where the model looked", styles.caption),
            ],
            ["", "", _HeatmapLegend(width=cell_width)],
        ],
        colWidths=[cell_width, _IMAGE_GAP, cell_width],
    )
    table.setStyle(
        TableStyle(
            [
                ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                ("VALIGN", (0, 0), (-1, 0), "MIDDLE"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1 * mm),
            ]
        )
    )
    return KeepTogether([Paragraph("Images", styles.heading), table])


def _ruled_table_style(header_from_column: int = 0, extra: list[Any] | None = None) -> TableStyle:
    """A compact table with a grey header row and a thin rule under every row."""
    return TableStyle(
        [
            ("BACKGROUND", (header_from_column, 0), (-1, 0), _LABEL_GREY),
            ("LINEBELOW", (0, 0), (-1, -1), 0.5, _RULE_GREY),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("TOPPADDING", (0, 0), (-1, -1), 0.8 * mm),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 0.8 * mm),
            *(extra or []),
        ]
    )


def _subtype_table(section: SegmentationSection, width: float, styles: _Styles) -> Table:
    """Each subtype's colour swatch, name, probability and amount."""
    rows: list[list[Any]] = [
        [
            "",
            Paragraph("Subtype", styles.cell_label),
            Paragraph("Probability", styles.cell_label),
            Paragraph(_markup(section.amount_title), styles.cell_label),
        ]
    ]
    swatches = []
    for index, line in enumerate(section.subtypes, start=1):
        rows.append(
            [
                "",
                Paragraph(_markup(line.title), styles.small),
                Paragraph(_markup(format_percent(line.probability, 0)), styles.small),
                Paragraph(_markup(line.amount), styles.small),
            ]
        )
        red, green, blue = line.colour
        swatches.append(
            ("BACKGROUND", (0, index), (0, index), colors.Color(red / 255, green / 255, blue / 255))
        )
    swatch = 4 * mm
    rest = width - swatch
    table = _Table(rows, colWidths=[swatch, rest * 0.4, rest * 0.22, rest * 0.38], repeatRows=1)
    table.setStyle(_ruled_table_style(header_from_column=1, extra=swatches))
    return table


def _segmentation_section(section: SegmentationSection | None, styles: _Styles) -> list[Flowable]:
    """Outlines by subtype: totals, a table with each subtype's colour, and the outlined slices.

    One image sits beside the table; several (a study's most outlined slices) go in a row below it.
    """
    if section is None:
        return []
    heading = Paragraph(
        "Outlines of possible haemorrhage by subtype: "
        f"{_markup(section.model.name)} <font color='#5A6570'>version {_markup(section.model.version)}</font>",
        styles.heading,
    )
    summary: list[Flowable] = [Paragraph(_markup(sentence), styles.body) for sentence in section.summary]
    columns = 3
    cell_width = (_CONTENT_WIDTH - (columns - 1) * _IMAGE_GAP) / columns
    body: list[Flowable]
    if len(section.images) == 1:
        data, caption = section.images[0]
        image = [
            _fitted_image(data, "outlines", cell_width, 60 * mm),
            Paragraph(_markup(caption), styles.caption),
        ]
        right_width = _CONTENT_WIDTH - cell_width - _IMAGE_GAP
        right = [*summary, Spacer(1, 1.5 * mm), _subtype_table(section, right_width, styles)]
        layout = _Table([[image, "", right]], colWidths=[cell_width, _IMAGE_GAP, right_width])
        layout.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("ALIGN", (0, 0), (0, 0), "CENTER"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ]
            )
        )
        body = [layout]
    else:
        body = [*summary, Spacer(1, 1.5 * mm), _subtype_table(section, _CONTENT_WIDTH, styles)]
        if section.images:
            images: list[Any] = []
            captions: list[Any] = []
            widths: list[float] = []
            for position, (data, caption) in enumerate(section.images[:columns]):
                if position:
                    images.append("")
                    captions.append("")
                    widths.append(_IMAGE_GAP)
                images.append(_fitted_image(data, f"outlines {position + 1}", cell_width, 55 * mm))
                captions.append(Paragraph(_markup(caption), styles.caption))
                widths.append(cell_width)
            grid = _Table([images, captions], colWidths=widths, hAlign="LEFT")
            grid.setStyle(
                TableStyle(
                    [
                        ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                        ("VALIGN", (0, 0), (-1, 0), "MIDDLE"),
                        ("LEFTPADDING", (0, 0), (-1, -1), 0),
                        ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                    ]
                )
            )
            body += [Spacer(1, 2 * mm), grid]
    flowables: list[Flowable] = [KeepTogether([heading, *body])]
    if section.notes:
        flowables += [Spacer(1, 1.5 * mm), _bullets(section.notes, styles.small)]
    return [*flowables, Spacer(1, _SECTION_GAP)]


def _model_section(model: ReportModelInfo, styles: _Styles) -> list[Flowable]:
    heading = Paragraph(
        f"Model: {_markup(model.name)} <font color='#5A6570'>version {_markup(model.version)}</font>",
        styles.heading,
    )
    if not model.metrics:
        return [heading, Paragraph("<i>No metrics recorded for this model.</i>", styles.body)]
    rows = [[Paragraph("Metric", styles.cell_label), Paragraph("Value", styles.cell_label)]]
    rows += [
        [Paragraph(_markup(label), styles.small), Paragraph(_markup(value), styles.small)]
        for label, value in model.metrics.items()
    ]
    table = _Table(rows, colWidths=[_CONTENT_WIDTH * 0.55, _CONTENT_WIDTH * 0.45], repeatRows=1)
    table.setStyle(_ruled_table_style())
    return [heading, table]


def _limitations_section(limitations: list[str], styles: _Styles) -> list[Flowable]:
    heading = Paragraph("Limitations", styles.heading)
    if not limitations:
        return [heading, Paragraph("<i>None recorded.</i>", styles.body)]
    return [heading, _bullets(limitations, styles.small)]


def _bullets(items: list[str], style: ParagraphStyle) -> Flowable:
    return ListFlowable(
        [ListItem(Paragraph(_markup(item), style), leftIndent=4 * mm) for item in items],
        bulletType="bullet",
        start="\u2022",
        leftIndent=4 * mm,
        bulletFontName=FONT_REGULAR,
        bulletFontSize=style.fontSize,
        spaceBefore=0,
        spaceAfter=0,
    )


def _fitted_image(data: bytes, name: str, max_width: float, max_height: float) -> Image:
    """An image flowable scaled, keeping its aspect ratio, to fit a max_width x max_height box."""
    picture = _decode_image(data, name)
    width, height = picture.size
    scale = min(max_width / width, max_height / height)
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG")
    encoded.seek(0)
    return Image(encoded, width=width * scale, height=height * scale)


def _decode_image(data: bytes, name: str) -> PILImage.Image:
    """Decode an image into 8-bit greyscale or RGB, no larger than needed for print."""
    try:
        picture: PILImage.Image = PILImage.open(io.BytesIO(data))
        picture.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable image ({len(data)} bytes): {exc}") from exc
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # PIL's own conversion clips 16-bit values to 255; stretch the range to 8 bits instead.
        pixels = np.asarray(picture, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
        picture = PILImage.fromarray(np.round(scaled).astype(np.uint8))
    elif picture.mode in ("1", "LA"):
        picture = picture.convert("L")
    elif picture.mode not in ("L", "RGB"):
        picture = picture.convert("RGB")
    if max(picture.size) > _IMAGE_MAX_PIXELS:
        picture.thumbnail((_IMAGE_MAX_PIXELS, _IMAGE_MAX_PIXELS), PILImage.Resampling.LANCZOS)
    return picture


def _jet_colours(steps: int) -> list[colors.Color]:
    """The colours of OpenCV's JET map, which the Grad-CAM overlay uses, from low to high."""
    levels = np.linspace(0, 255, steps).round().astype(np.uint8).reshape(-1, 1)
    bgr = cv2.applyColorMap(levels, cv2.COLORMAP_JET).reshape(-1, 3)
    return [colors.Color(red / 255, green / 255, blue / 255) for blue, green, red in bgr.tolist()]


class _HeatmapLegend(Flowable):
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
        canvas.setFillColor(_MUTED)
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
        canvas.setStrokeColor(_RULE_GREY)
        canvas.setLineWidth(0.4)
        canvas.rect(bar_x, bar_y, bar_width, self._BAR_HEIGHT, stroke=1, fill=0)
        canvas.setFillColor(_MUTED)
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
        canvas.setFillColor(_MUTED)
        canvas.drawString(swatch_x + swatch + 1.5 * mm, (swatch - font_size * 0.7) / 2, outline_text)


@dataclass(frozen=True)
class _Footer:
    model: str
    report_id: str
    segmentation_model: str | None = None


class _FooterCanvas(Canvas):
    """A canvas that holds its pages back until the end, so each footer can say "page N of M"."""

    def __init__(self, *args: Any, footer: _Footer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._page_states: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._page_states.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        page_count = len(self._page_states)
        for state in self._page_states:
            self.__dict__.update(state)
            self._draw_footer(page_count)
            super().showPage()
        super().save()

    def _draw_footer(self, page_count: int) -> None:
        font_size = 7.5
        y = _FOOTER_MARGIN / 2
        self.saveState()
        self.setStrokeColor(_RULE_GREY)
        self.setLineWidth(0.5)
        self.line(_MARGIN, y + 3.5 * mm, _PAGE_WIDTH - _MARGIN, y + 3.5 * mm)
        self.setFillColor(_MUTED)
        self.setFont(FONT_REGULAR, font_size)
        self.drawString(_MARGIN, y, f"Model {self._footer.model}")
        if self._footer.segmentation_model:
            self.drawString(_MARGIN, y - 3.2 * mm, f"Segmentation {self._footer.segmentation_model}")
        self.drawCentredString(_PAGE_WIDTH / 2, y, f"Report {self._footer.report_id}")
        self.setFont(FONT_BOLD, font_size)
        self.drawRightString(
            _PAGE_WIDTH - _MARGIN,
            y,
            f"Page {self.getPageNumber()} of {page_count} \u00b7 Not for clinical use",
        )
        self.restoreState()
