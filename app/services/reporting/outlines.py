"""The report's section on the outlines of possible haemorrhage, by subtype.

A slice shows its outlined areas beside the outlines over it; a study shows its volumes and its
most outlined slices. Both end with what the outlines are worth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Paragraph, Spacer, Table, TableStyle

from app.core.wording import area_text, format_percent, volume_text
from app.services.details import OutlineModel, SliceSegmentationRecord, StudySegmentationRecord
from app.services.reporting.fonts import markup
from app.services.reporting.layout import (
    CONTENT_WIDTH,
    IMAGE_GAP,
    IMAGES_PER_ROW,
    ROW_CELL_WIDTH,
    SECTION_GAP,
    ReportTable,
    Styles,
    bullets,
    fitted_image,
    image_row,
    ruled_table_style,
)
from app.services.reporting.sections import ReportModelInfo
from app.services.segmentation.images import composite_png
from app.services.segmentation.presentation import (
    FALLBACK_NOTE,
    LegendRow,
    help_sentences,
    legend,
    study_summary_sentences,
)
from app.services.segmentation.records import finite_float


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

    @property
    def model_line(self) -> str:
        """The segmentation model's name and version, as each page's footer prints them."""
        return f"{self.model.name} {self.model.version}"


def _subtype_table(section: SegmentationSection, width: float, styles: Styles) -> Table:
    """Each subtype's colour swatch, name, probability and amount."""
    rows: list[list[Any]] = [
        [
            "",
            Paragraph("Subtype", styles.cell_label),
            Paragraph("Probability", styles.cell_label),
            Paragraph(markup(section.amount_title), styles.cell_label),
        ]
    ]
    swatches = []
    for index, line in enumerate(section.subtypes, start=1):
        rows.append(
            [
                "",
                Paragraph(markup(line.title), styles.small),
                Paragraph(markup(format_percent(line.probability, 0)), styles.small),
                Paragraph(markup(line.amount), styles.small),
            ]
        )
        red, green, blue = line.colour
        swatches.append(
            ("BACKGROUND", (0, index), (0, index), colors.Color(red / 255, green / 255, blue / 255))
        )
    swatch = 4 * mm
    rest = width - swatch
    table = ReportTable(rows, colWidths=[swatch, rest * 0.4, rest * 0.22, rest * 0.38], repeatRows=1)
    table.setStyle(ruled_table_style(header_from_column=1, extra=swatches))
    return table


def outlines_section(section: SegmentationSection | None, styles: Styles) -> list[Flowable]:
    """Outlines by subtype: totals, a table with each subtype's colour, and the outlined slices.

    One image sits beside the table; several (a study's most outlined slices) go in a row below it.
    """
    if section is None:
        return []
    heading = Paragraph(
        "Outlines of possible haemorrhage by subtype: "
        f"{markup(section.model.name)} <font color='#5A6570'>version {markup(section.model.version)}</font>",
        styles.heading,
    )
    summary: list[Flowable] = [Paragraph(markup(sentence), styles.body) for sentence in section.summary]
    columns, cell_width = IMAGES_PER_ROW, ROW_CELL_WIDTH
    body: list[Flowable]
    if len(section.images) == 1:
        data, caption = section.images[0]
        image = [
            fitted_image(data, "outlines", cell_width, 60 * mm),
            Paragraph(markup(caption), styles.caption),
        ]
        right_width = CONTENT_WIDTH - cell_width - IMAGE_GAP
        right = [*summary, Spacer(1, 1.5 * mm), _subtype_table(section, right_width, styles)]
        layout = ReportTable([[image, "", right]], colWidths=[cell_width, IMAGE_GAP, right_width])
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
        body = [*summary, Spacer(1, 1.5 * mm), _subtype_table(section, CONTENT_WIDTH, styles)]
        if section.images:
            shown = section.images[:columns]
            images = [
                fitted_image(data, f"outlines {position + 1}", cell_width, 55 * mm)
                for position, (data, _) in enumerate(shown)
            ]
            captions = [Paragraph(markup(caption), styles.caption) for _, caption in shown]
            grid = image_row(images, captions, cell_width, h_align="LEFT")
            body += [Spacer(1, 2 * mm), grid]
    flowables: list[Flowable] = [KeepTogether([heading, *body])]
    if section.notes:
        flowables += [Spacer(1, 1.5 * mm), bullets(section.notes, styles.small)]
    return [*flowables, Spacer(1, SECTION_GAP)]


def _report_lines(rows: list[LegendRow], volumes: bool) -> list[SubtypeLine]:
    """The legend's rows as the report's lines: each subtype's area, or its volume for a study."""
    return [
        SubtypeLine(
            title=row.title,
            colour=row.rgb,
            probability=row.probability,
            amount=volume_text(row.volume_ml, row.area_px) if volumes else row.area,
        )
        for row in rows
    ]


def _report_model(model: OutlineModel | None) -> ReportModelInfo:
    """The model that drew the outlines, from a stored record (its metrics are not shown)."""
    if model is None:
        return ReportModelInfo(name="unknown", version="", metrics={})
    return ReportModelInfo(name=model.name, version=model.version, metrics={})


def slice_report_section(
    record: SliceSegmentationRecord, card: dict[str, Any], image_png: bytes, contours_png: bytes
) -> SegmentationSection:
    """The report's outlines section for one slice: areas by subtype and the outlines over the slice.

    Args:
        record: the slice's stored segmentation (``slice_record``), typed.
        card: the card of the model that drew the outlines; empty when it is not loaded.
        image_png: the slice.
        contours_png: its outlines (``contours.png``).
    """
    blood_px = record.blood_area_px
    blood = area_text(blood_px, finite_float(record.blood_area_mm2))
    summary = [
        f"Outlined blood on this slice: {blood}." if blood_px else "No blood was outlined on this slice."
    ]
    if record.blood_area_mm2 is None:
        summary.append("Areas are in pixels: the image does not give its pixel spacing.")
    return SegmentationSection(
        model=_report_model(record.model),
        amount_title="Outlined area",
        subtypes=_report_lines(legend(record), volumes=False),
        summary=summary,
        images=[(composite_png(image_png, contours_png), "Outlines over the slice, coloured by subtype")],
        notes=help_sentences(card) if card else [FALLBACK_NOTE],
    )


def study_report_section(
    stored: StudySegmentationRecord, card: dict[str, Any], images: list[tuple[bytes, str]]
) -> SegmentationSection:
    """The report's outlines section for a study: volumes by subtype and the most outlined slices.

    Args:
        stored: the study's stored segmentation (``StudySegmentation.summary``), as read from
            its details.
        card: the card of the model that drew the outlines; empty when it is not loaded.
        images: ``(outlines over a slice, caption)`` for the most outlined slices.
    """
    return SegmentationSection(
        model=_report_model(stored.model),
        amount_title="Volume (voxel count)",
        subtypes=_report_lines(legend(stored), volumes=True),
        summary=study_summary_sentences(stored),
        images=images,
        notes=help_sentences(card) if card else [FALLBACK_NOTE],
    )
