"""Tests of the report's shared parts: the row of images, the verdict box, the checks and the outlines."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from reportlab.lib import colors
from reportlab.platypus import Paragraph

from app.core.labels import Label
from app.services.reporting import ReportModelInfo, SegmentationSection, SubtypeLine
from app.services.reporting.layout import CONTENT_WIDTH, IMAGE_GAP, Styles, image_row
from app.services.reporting.sections import validate, verdict_box
from app.services.segmentation.records import finite_float


def _report(**values: object) -> SimpleNamespace:
    fields: dict[str, object] = {
        "probability": 0.7,
        "threshold": 0.5,
        "label": Label.HEMORRHAGE,
        "created_at": datetime(2026, 1, 2, tzinfo=UTC),
    }
    return SimpleNamespace(**{**fields, **values})


def test_image_row_puts_a_gap_between_columns() -> None:
    table = image_row(["a", "b", "c"], ["1", "2", "3"], cell_width=50.0, h_align="LEFT")

    assert table._colWidths == [50.0, IMAGE_GAP, 50.0, IMAGE_GAP, 50.0]
    assert table._cellvalues == [["a", "", "b", "", "c"], ["1", "", "2", "", "3"]]
    assert table.hAlign == "LEFT"


def test_image_row_needs_a_caption_for_each_image() -> None:
    with pytest.raises(ValueError):
        image_row(["a", "b"], ["1"], cell_width=50.0)


def test_verdict_box_spans_the_content_width() -> None:
    styles = Styles()
    box = verdict_box(
        [Paragraph("left", styles.body)], [Paragraph("right", styles.body)], colors.red, colors.pink, 40.0
    )

    assert sum(box._colWidths) == pytest.approx(CONTENT_WIDTH)
    assert box._colWidths[1] == 40.0


def test_validate_accepts_only_the_labels_of_its_report() -> None:
    validate(_report(), [Label.HEMORRHAGE, Label.NO_HEMORRHAGE])
    out_of_scope = _report(label=Label.OUT_OF_SCOPE)
    validate(out_of_scope, [Label.HEMORRHAGE, Label.NO_HEMORRHAGE, Label.OUT_OF_SCOPE])
    with pytest.raises(ValueError, match="label must be one of 'hemorrhage', 'no_hemorrhage'"):
        validate(out_of_scope, [Label.HEMORRHAGE, Label.NO_HEMORRHAGE])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probability": 1.2}, "probability must be in"),
        ({"threshold": -0.1}, "threshold must be in"),
        ({"probability": 0.4}, "contradicts probability 0.4 below"),
        ({"label": Label.NO_HEMORRHAGE}, "contradicts probability 0.7 above"),
        ({"created_at": datetime(2026, 1, 2)}, "timezone-aware"),
    ],
)
def test_validate_refuses_what_cannot_be_printed_truthfully(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(_report(**changes), [Label.HEMORRHAGE, Label.NO_HEMORRHAGE])


def test_outlines_section_names_its_model_for_the_footer() -> None:
    section = SegmentationSection(
        model=ReportModelInfo(name="ich-unet", version="1.1.0", metrics={}),
        amount_title="Outlined area",
        subtypes=[SubtypeLine(title="Subdural", colour=(204, 121, 167), probability=0.4, amount="12 px")],
    )

    assert section.model_line == "ich-unet 1.1.0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.25, 0.25),
        (3, 3.0),
        (True, None),
        (float("nan"), None),
        (float("inf"), None),
        ("0.5", None),
        (None, None),
    ],
)
def test_finite_float_reads_only_finite_numbers(value: object, expected: float | None) -> None:
    assert finite_float(value) == expected
