"""The page of a PDF report: A4 geometry, colours, paragraph styles, tables, images and the footer.

Every report shares them, so a slice report and a study report look like one family and each
page's footer carries the model and "Not for clinical use".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    ListFlowable,
    ListItem,
    Paragraph,
    SimpleDocTemplate,
    Table,
    TableStyle,
)

from app.services.reporting.fonts import FONT_BOLD, FONT_REGULAR, markup, register_fonts

TITLE = "Intracranial haemorrhage analysis"
BANNER_TEXT = "NOT FOR CLINICAL USE \u2013 decision support only, not a diagnosis"

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 15 * mm
FOOTER_MARGIN = 18 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
IMAGE_GAP = 6 * mm
SECTION_GAP = 3.5 * mm
IMAGE_MAX_HEIGHT = 62 * mm
# A row of images (a study's key slices, its most outlined slices) holds three.
IMAGES_PER_ROW = 3
ROW_CELL_WIDTH = (CONTENT_WIDTH - (IMAGES_PER_ROW - 1) * IMAGE_GAP) / IMAGES_PER_ROW
# Longest side, in pixels, of an embedded image: about 300 dpi at the printed size.
_IMAGE_MAX_PIXELS = 1024

NAVY = colors.HexColor("#1F3A5F")
BANNER_RED = colors.HexColor("#A4161A")
POSITIVE = colors.HexColor("#A4161A")
POSITIVE_TINT = colors.HexColor("#FCEBEA")
NEGATIVE = colors.HexColor("#1F3A5F")
NEGATIVE_TINT = colors.HexColor("#EAF0F7")
LABEL_GREY = colors.HexColor("#F1F3F5")
RULE_GREY = colors.HexColor("#C7CCD1")
MUTED = colors.HexColor("#5A6570")

# Images and their captions centred in their cells, the first row's images on one middle line,
# with no side padding so that the columns and gaps add up to the content width.
IMAGE_CELLS: list[tuple[Any, ...]] = [
    ("ALIGN", (0, 0), (-1, -1), "CENTER"),
    ("VALIGN", (0, 0), (-1, 0), "MIDDLE"),
    ("LEFTPADDING", (0, 0), (-1, -1), 0),
    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
]


class ReportTable(Table):
    """A table whose cells start in the report's font, not in reportlab's default Helvetica."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT_REGULAR)]))


class Styles:
    """Paragraph styles of the report, all in the embedded DejaVu Sans family."""

    def __init__(self) -> None:
        register_fonts()
        base = ParagraphStyle("base", fontName=FONT_REGULAR, fontSize=9, leading=11.5, textColor=colors.black)
        self.body = base
        self.small = ParagraphStyle("small", parent=base, fontSize=8, leading=10)
        self.muted = ParagraphStyle("muted", parent=self.small, textColor=MUTED)
        self.muted_right = ParagraphStyle("muted_right", parent=self.muted, alignment=TA_RIGHT)
        self.title = ParagraphStyle(
            "title", parent=base, fontName=FONT_BOLD, fontSize=17, leading=21, textColor=NAVY
        )
        self.heading = ParagraphStyle(
            "heading",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=10.5,
            leading=13,
            textColor=NAVY,
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
        self.cell_label = ParagraphStyle("cell_label", parent=self.small, textColor=MUTED)
        self.cell_value = ParagraphStyle("cell_value", parent=base)
        self.caption = ParagraphStyle("caption", parent=self.small, alignment=TA_CENTER, textColor=MUTED)
        self.verdict = ParagraphStyle("verdict", parent=base, fontName=FONT_BOLD, fontSize=15, leading=18)
        self.big_number = ParagraphStyle(
            "big_number",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=20,
            leading=23,
            alignment=TA_RIGHT,
        )


def ruled_table_style(header_from_column: int = 0, extra: list[Any] | None = None) -> TableStyle:
    """A compact table with a grey header row and a thin rule under every row."""
    return TableStyle(
        [
            ("BACKGROUND", (header_from_column, 0), (-1, 0), LABEL_GREY),
            ("LINEBELOW", (0, 0), (-1, -1), 0.5, RULE_GREY),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("TOPPADDING", (0, 0), (-1, -1), 0.8 * mm),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 0.8 * mm),
            *(extra or []),
        ]
    )


def bullets(items: list[str], style: ParagraphStyle) -> Flowable:
    """A bulleted list of user text, one paragraph per item."""
    return ListFlowable(
        [ListItem(Paragraph(markup(item), style), leftIndent=4 * mm) for item in items],
        bulletType="bullet",
        start="\u2022",
        leftIndent=4 * mm,
        bulletFontName=FONT_REGULAR,
        bulletFontSize=style.fontSize,
        spaceBefore=0,
        spaceAfter=0,
    )


def fitted_image(data: bytes, name: str, max_width: float, max_height: float) -> Image:
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


def image_row(images: list[Any], captions: list[Any], cell_width: float, h_align: str = "CENTER") -> Table:
    """Images side by side, each above its caption, ``IMAGE_GAP`` apart.

    Args:
        images: the image flowables (or ``""`` for an empty cell), left to right.
        captions: one caption (or ``""``) per image.
        cell_width: the width of each image's column.
        h_align: where the row sits across the page (``"CENTER"``, ``"LEFT"``).
    """
    row_images: list[Any] = []
    row_captions: list[Any] = []
    widths: list[float] = []
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        if index:
            row_images.append("")
            row_captions.append("")
            widths.append(IMAGE_GAP)
        row_images.append(image)
        row_captions.append(caption)
        widths.append(cell_width)
    table = ReportTable([row_images, row_captions], colWidths=widths, hAlign=h_align)
    table.setStyle(TableStyle(IMAGE_CELLS))
    return table


@dataclass(frozen=True)
class _Footer:
    """What each page's footer says besides its page number."""

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
        y = FOOTER_MARGIN / 2
        self.saveState()
        self.setStrokeColor(RULE_GREY)
        self.setLineWidth(0.5)
        self.line(MARGIN, y + 3.5 * mm, PAGE_WIDTH - MARGIN, y + 3.5 * mm)
        self.setFillColor(MUTED)
        self.setFont(FONT_REGULAR, font_size)
        self.drawString(MARGIN, y, f"Model {self._footer.model}")
        if self._footer.segmentation_model:
            self.drawString(MARGIN, y - 3.2 * mm, f"Segmentation {self._footer.segmentation_model}")
        self.drawCentredString(PAGE_WIDTH / 2, y, f"Report {self._footer.report_id}")
        self.setFont(FONT_BOLD, font_size)
        self.drawRightString(
            PAGE_WIDTH - MARGIN,
            y,
            f"Page {self.getPageNumber()} of {page_count} \u00b7 Not for clinical use",
        )
        self.restoreState()


def build_pdf(
    story: list[Any],
    title: str,
    report_id: str,
    model: str,
    segmentation_model: str | None = None,
) -> bytes:
    """Lay out ``story`` on A4 with the standard margins, metadata and footer.

    Args:
        story: the flowables, top to bottom.
        title: the PDF's title metadata.
        report_id: printed in each footer.
        model: the model's name and version, printed in each footer.
        segmentation_model: the segmentation model's name and version, when outlines are shown.
    """
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=FOOTER_MARGIN,
        title=title,
        author="ICH Detect",
        subject="Decision support only. Not for clinical use.",
        creator="ICH Detect",
        initialFontName=FONT_REGULAR,
    )
    footer = _Footer(model=model, report_id=report_id, segmentation_model=segmentation_model)
    document.build(story, canvasmaker=partial(_FooterCanvas, footer=footer))
    return buffer.getvalue()
