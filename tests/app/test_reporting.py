"""Tests of the PDF slice report: its text, escaping, layout on the page and embedded images."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from pypdf import PdfReader

from app.services.reporting import (
    ReportModelInfo,
    SliceReport,
    finding_sentence,
    format_percent,
    render_slice_report,
    render_study_report,
)

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"
REPORT_ID = "3f2b8c1e-5d4a-4f6b-9c7e-0a1b2c3d4e5f"
A4_ASPECT = 210 / 297
# Pure magenta never occurs in the JET colour map of the legend, so it can only come from the overlay.
MAGENTA_RGB = (255, 0, 255)


def _png(image: np.ndarray) -> bytes:
    """Encode a greyscale or RGB array as PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _slice(size: int = 256) -> np.ndarray:
    image = np.zeros((size, size), np.uint8)
    cv2.circle(image, (size // 2, size // 2), size * 2 // 5, 170, thickness=-1)
    return image


def _overlay(grey: np.ndarray) -> np.ndarray:
    overlay = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    height, width = grey.shape
    centre, radius = (width * 3 // 5, height * 2 // 5), width // 8
    cv2.circle(overlay, centre, radius, MAGENTA_RGB, thickness=-1)
    cv2.circle(overlay, centre, radius, (255, 255, 255), thickness=2)
    return overlay


def _model() -> ReportModelInfo:
    return ReportModelInfo(
        name="ich-compact",
        version="1.0.0",
        metrics={
            "Test AUC, CT-ICH slices": "0.93 (95% CI 0.88-0.97)",
            "Sensitivity at threshold": "0.85 (95% CI 0.74-0.93)",
            "Specificity at threshold": "0.88 (95% CI 0.83-0.92)",
        },
    )


@pytest.fixture
def report() -> SliceReport:
    grey = _slice()
    return SliceReport(
        report_id=REPORT_ID,
        created_at=datetime(2025, 11, 26, 14, 5, 9, tzinfo=UTC),
        probability=0.87,
        label="hemorrhage",
        threshold=0.42,
        original_png=_png(grey),
        overlay_png=_png(_overlay(grey)),
        model=_model(),
        limitations=[
            "Trained on slices from 75 patients of one public dataset; performance elsewhere is unknown.",
            "Judges one slice at a time, without neighbouring slices or clinical context.",
            "Grad-CAM shows where the model looked, not the extent of a bleed.",
        ],
        patient_name="Jane Roe",
        patient_id="MRN-004217",
        study_description="CT head without contrast",
        study_date="2025-11-26",
        requesting_clinician="Dr A. Smith",
        source_format="dicom",
        extra_findings=["Brain window (W80/L40) applied before analysis."],
    )


def _text(pdf: bytes) -> str:
    """All pages' text with runs of whitespace collapsed, so wrapped sentences read whole."""
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def _render_first_page(pdf: bytes, folder: Path) -> np.ndarray:
    """Rasterise page 1 with poppler's pdftoppm at 60 dpi and read it back as RGB."""
    assert shutil.which("pdftoppm"), "pdftoppm is missing: run `make system-deps` (poppler-utils)."
    pdf_path = folder / "report.pdf"
    pdf_path.write_bytes(pdf)
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "60",
            "-png",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf_path),
            str(folder / "page"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    png_path = folder / "page.png"
    assert png_path.is_file()
    image = cv2.imread(str(png_path), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_output_is_a_one_page_pdf(report: SliceReport) -> None:
    pdf = render_slice_report(report)

    assert pdf.startswith(b"%PDF")
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 1


def test_text_shows_every_field(report: SliceReport) -> None:
    text = _text(render_slice_report(report))

    for expected in [
        "Intracranial haemorrhage analysis",
        REPORT_ID,
        "2025-11-26 14:05:09 UTC",
        "Jane Roe",
        "MRN-004217",
        "CT head without contrast",
        "Dr A. Smith",
        "DICOM",
        "87%",
        "42%",
        "Haemorrhage suspected",
        "ich-compact",
        "1.0.0",
        "Brain window (W80/L40) applied before analysis.",
        "Low attention",
        "High attention",
        "White outline: most activated region",
        *report.model.metrics.keys(),
        *report.model.metrics.values(),
        *report.limitations,
    ]:
        assert expected in text, f"{expected!r} missing from the report text"
    assert "decision support only, not a diagnosis" in text
    assert text.lower().count("not for clinical use") >= 2, "banner and footer both say it"
    assert "Page 1 of 1" in text


def test_positive_finding_asks_for_prompt_review(report: SliceReport) -> None:
    text = _text(render_slice_report(report))

    assert (
        "The model's probability of 87% is above its decision threshold of 42%; "
        "a radiologist should review this slice promptly." in text
    )
    assert "No haemorrhage detected" not in text
    assert "does not exclude haemorrhage" not in text


def test_negative_finding_says_haemorrhage_is_not_excluded(report: SliceReport) -> None:
    negative = dataclasses.replace(report, probability=0.12, label="no_hemorrhage")

    text = _text(render_slice_report(negative))

    assert "No haemorrhage detected" in text
    assert "The model's probability of 12% is below its decision threshold of 42%." in text
    assert "A negative result does not exclude haemorrhage" in text
    assert "Haemorrhage suspected" not in text
    assert "promptly" not in text


def test_the_operating_point_is_named_under_the_finding(report: SliceReport) -> None:
    assert "Operating point: model card default" in _text(render_slice_report(report))
    site = "site operating point, chosen on 212 images on 2026-12-01 (site.csv: sensitivity 0.95, specificity 0.61)"
    text = " ".join(_text(render_slice_report(dataclasses.replace(report, operating_point=site))).split())
    assert f"Operating point: {site}" in text and "Page 1 of 1" in text
    # An image that is not a head CT slice was decided by no threshold.
    out_of_scope = dataclasses.replace(report, label="out_of_scope", operating_point=site)
    assert "Operating point" not in _text(render_slice_report(out_of_scope))


def test_markup_characters_render_literally(report: SliceReport) -> None:
    tricky = dataclasses.replace(
        report,
        patient_name="O'Brien <test> & co",
        patient_id='<b>id</b> "42"',
        study_description="<para>unclosed & <font",
        model=ReportModelInfo(name="ich<x>", version="1&2", metrics={"AUC <all>": "0.9 & up"}),
        limitations=["Fails on <br/> & friends"],
    )

    text = _text(render_slice_report(tricky))

    for literal in [
        "O'Brien <test> & co",
        '<b>id</b> "42"',
        "<para>unclosed & <font",
        "ich<x>",
        "1&2",
        "AUC <all>",
        "0.9 & up",
        "Fails on <br/> & friends",
    ]:
        assert literal in text, f"{literal!r} was not rendered literally"
    assert "&amp;" not in text
    assert "&lt;" not in text


def test_missing_details_show_not_given(report: SliceReport) -> None:
    anonymous = dataclasses.replace(
        report,
        patient_name=None,
        patient_id=None,
        study_description=None,
        study_date=None,
        requesting_clinician=None,
        source_format=None,
        extra_findings=[],
    )

    text = _text(render_slice_report(anonymous))

    assert text.count("not given") == 6
    assert "None" not in text
    assert "Jane Roe" not in text


@pytest.mark.integration
def test_page_renders_as_a4_with_both_images(report: SliceReport, tmp_path: Path) -> None:
    pdf = render_slice_report(report)

    page = _render_first_page(pdf, tmp_path)

    height, width = page.shape[:2]
    assert width / height == pytest.approx(A4_ASPECT, abs=0.01)
    assert page.std() > 20, "the page looks blank"
    red, green, blue = (page[..., channel].astype(int) for channel in range(3))
    magenta = (red > 200) & (green < 80) & (blue > 200)
    assert magenta.sum() > 200, "the overlay's colours do not appear on the page"
    # The original slice's grey disc, next to the overlay.
    grey = (np.abs(red - 170) < 12) & (red == green) & (green == blue)
    assert grey.sum() > 2000, "the original slice does not appear on the page"
    assert len(PdfReader(io.BytesIO(pdf)).pages[0].images) >= 2

    ARTIFACTS_DIR.mkdir(exist_ok=True)
    cv2.imwrite(str(ARTIFACTS_DIR / "report_page1.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize(
    ("original", "overlay"),
    [
        pytest.param(_slice(), _overlay(_slice()), id="grey-square"),
        pytest.param(cv2.cvtColor(_slice(), cv2.COLOR_GRAY2RGB), _overlay(_slice()), id="rgb-original"),
        pytest.param(np.full((64, 512), 90, np.uint8), np.full((64, 512, 3), 90, np.uint8), id="wide"),
        pytest.param(np.full((900, 120), 90, np.uint8), np.full((900, 120, 3), 90, np.uint8), id="tall"),
        pytest.param(_slice(2048), _overlay(_slice(2048)), id="large"),
    ],
)
def test_images_of_any_shape_fit_on_one_page(
    report: SliceReport, original: np.ndarray, overlay: np.ndarray
) -> None:
    shaped = dataclasses.replace(report, original_png=_png(original), overlay_png=_png(overlay))

    reader = PdfReader(io.BytesIO(render_slice_report(shaped)))

    assert len(reader.pages) == 1
    embedded = reader.pages[0].images
    assert len(embedded) >= 2
    longest = max(max(image.image.size) for image in embedded)
    assert longest <= 1024, "large images are downscaled before embedding"


def test_sixteen_bit_and_transparent_images_are_accepted(report: SliceReport) -> None:
    ramp = np.tile(np.linspace(0, 4000, 128).astype(np.uint16), (128, 1))
    rgba = np.dstack([_overlay(_slice(128)), np.full((128, 128), 255, np.uint8)])
    converted = dataclasses.replace(
        report,
        original_png=_png(ramp),
        overlay_png=cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes(),
    )

    assert render_slice_report(converted).startswith(b"%PDF")


def test_long_limitations_flow_onto_numbered_pages(report: SliceReport) -> None:
    many = dataclasses.replace(
        report, limitations=[f"Limitation number {index}: " + "known weakness. " * 12 for index in range(40)]
    )

    reader = PdfReader(io.BytesIO(render_slice_report(many)))

    page_count = len(reader.pages)
    assert page_count >= 2
    for number, page in enumerate(reader.pages, start=1):
        footer = " ".join(page.extract_text().split())
        assert f"Page {number} of {page_count}" in footer
        assert "Not for clinical use" in footer
        assert REPORT_ID in footer
        assert "ich-compact 1.0.0" in footer
    assert "Limitation number 39" in _text(render_slice_report(many))


def test_creation_time_is_shown_in_utc(report: SliceReport) -> None:
    in_berlin = dataclasses.replace(
        report, created_at=datetime(2025, 11, 26, 15, 5, 9, tzinfo=timezone(timedelta(hours=1)))
    )

    assert "2025-11-26 14:05:09 UTC" in _text(render_slice_report(in_berlin))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probability": 1.2}, "probability must be in"),
        ({"threshold": -0.1}, "threshold must be in"),
        ({"label": "bleed"}, "label must be"),
        ({"label": "no_hemorrhage"}, "contradicts"),
        ({"probability": 0.1}, "contradicts"),
        ({"created_at": datetime(2025, 11, 26, 14, 5)}, "timezone-aware"),
        ({"original_png": b"not an image"}, "original_png is not a readable image"),
        ({"overlay_png": b""}, "overlay_png is not a readable image"),
    ],
)
def test_invalid_reports_are_rejected(report: SliceReport, changes: dict[str, object], message: str) -> None:
    invalid = dataclasses.replace(report, **changes)

    with pytest.raises(ValueError, match=message):
        render_slice_report(invalid)


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (0.873, 0, "87%"),
        (0.0, 0, "0%"),
        (1.0, 0, "100%"),
        (0.004, 0, "<1%"),
        (0.996, 0, ">99%"),
        (0.4237, 1, "42.4%"),
    ],
)
def test_format_percent(value: float, decimals: int, expected: str) -> None:
    assert format_percent(value, decimals) == expected


def test_finding_sentence_adds_a_decimal_when_whole_percentages_tie() -> None:
    sentence = finding_sentence(0.424, 0.42, "hemorrhage")

    assert "42.4% is above its decision threshold of 42.0%" in sentence


def test_finding_sentence_at_the_threshold() -> None:
    assert "of 42% is at its decision threshold of 42%" in finding_sentence(0.42, 0.42, "hemorrhage")


def _study_report(**changes: object) -> object:
    from app.services.reporting import KeySlice, StudyReport

    overlay = _png(_overlay(_slice()))
    probabilities = [0.05, 0.2, 0.91, 0.85, 0.3]
    report = StudyReport(
        report_id=REPORT_ID,
        created_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        probability=0.91,
        label="hemorrhage",
        threshold=0.5,
        aggregation="max",
        slice_probabilities=probabilities,
        slice_threshold=0.5,
        key_slices=[
            KeySlice(
                index=index, probability=probabilities[index], position_mm=5.0 * index, overlay_png=overlay
            )
            for index in (2, 3, 4)
        ],
        model=_model(),
        limitations=["Tested on few patients."],
        patient_name="Study^Patient",
        source_format="DICOM series",
        skipped_count=2,
    )
    return dataclasses.replace(report, **changes)


def test_study_report_shows_decision_chart_and_key_slices() -> None:
    from app.services.reporting import render_study_report, study_decision_sentence

    report = _study_report()
    pdf = render_study_report(report)  # type: ignore[arg-type]
    reader = PdfReader(io.BytesIO(pdf))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "Haemorrhage suspected" in text and "Most likely on slice 3" in text
    assert "over 5 slices" in text and "aggregation 'max'" in text
    assert "Slice 3, 10.0 mm: 91.0%" in text and "Slice 5, 20.0 mm: 30.0%" in text
    assert "2 uploaded object(s) were not analysed" in text
    assert "Study^Patient" in text and "Not for clinical use" in text
    # The chart and the overlays are embedded images (identical overlays are stored once).
    assert sum(len(page.images) for page in reader.pages) >= 2
    negative = _study_report(probability=0.3, label="no_hemorrhage")
    assert "does not exclude haemorrhage" in study_decision_sentence(negative)  # type: ignore[arg-type]


def test_study_report_names_the_operating_point_of_its_threshold() -> None:
    from app.services.reporting import render_study_report

    site = "site setting ICH_STUDY_THRESHOLD=0.5"
    text = " ".join(_text(render_study_report(_study_report(operating_point=site))).split())  # type: ignore[arg-type]
    assert f"Operating point: {site}" in text
    assert "How this study decision is made" not in text


def test_study_report_says_how_the_decision_is_made() -> None:
    from app.services.reporting import render_study_report

    rule = [
        "A study is flagged when the highest slice probability reaches 50.0%.",
        "On the CT-ICH test patients, the rule flagged 4/4.",
    ]
    text = " ".join(_text(render_study_report(_study_report(decision_rule=rule))).split())  # type: ignore[arg-type]
    assert (
        "How this study decision is made. A study is flagged when the highest slice probability reaches 50.0%."
        in text
    )
    assert "the rule flagged 4/4." in text


def test_study_report_refuses_inconsistent_input() -> None:
    from app.services.reporting import render_study_report

    with pytest.raises(ValueError, match="contradicts"):
        render_study_report(_study_report(probability=0.2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one slice"):
        render_study_report(_study_report(slice_probabilities=[]))  # type: ignore[arg-type]


def _segmentation_section(images: int = 1) -> object:
    from app.services.reporting import SegmentationSection, SubtypeLine

    outlined = cv2.cvtColor(_slice(), cv2.COLOR_GRAY2RGB)
    cv2.circle(outlined, (150, 100), 30, (204, 121, 167), thickness=2)
    return SegmentationSection(
        model=ReportModelInfo(name="ich-unet", version="2.3.4", metrics={}),
        amount_title="Outlined area",
        subtypes=[
            SubtypeLine("Epidural", (230, 159, 0), 0.02, "0 px"),
            SubtypeLine("Subdural", (204, 121, 167), 0.81, "512.3 mm² (2,530 px)"),
        ],
        summary=["Outlined blood on this slice: 512.3 mm² (2,530 px)."],
        images=[(_png(outlined), f"Outlines {index + 1}") for index in range(images)],
        notes=["The outlines come from a model trained on few labelled slices."],
    )


def test_outlines_section_lists_subtypes_and_names_the_model_on_every_page(report: SliceReport) -> None:
    plain = render_slice_report(report)
    pdf = render_slice_report(dataclasses.replace(report, segmentation=_segmentation_section()))  # type: ignore[arg-type]
    text = _text(pdf)
    assert "Outlines of possible haemorrhage by subtype: ich-unet version 2.3.4" in text
    assert "Subdural 81% 512.3 mm² (2,530 px)" in text and "Epidural 2% 0 px" in text
    assert "trained on few labelled slices" in text
    reader = PdfReader(io.BytesIO(pdf))
    for page in reader.pages:
        page_text = page.extract_text()
        assert "Not for clinical use" in page_text and "ich-compact 1.0.0" in page_text
        assert "Segmentation ich-unet 2.3.4" in page_text
    # Original, overlay, legend and the outlined slice.
    assert sum(len(page.images) for page in reader.pages) > sum(
        len(page.images) for page in PdfReader(io.BytesIO(plain)).pages
    )
    assert "Segmentation" not in _text(plain)


def test_study_report_shows_volumes_and_outlined_slices() -> None:
    from app.services.reporting import render_study_report

    section = dataclasses.replace(
        _segmentation_section(images=3),  # type: ignore[type-var]
        amount_title="Volume (voxel count)",
        summary=["Outlined blood volume 12.5 mL by voxel counting.", "Bedside ABC/2 estimate: 14.0 mL."],
    )
    pdf = render_study_report(_study_report(segmentation=section))  # type: ignore[arg-type]
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "Volume (voxel count)" in text and "ABC/2 estimate: 14.0 mL" in text
    assert "Outlines 1" in text and "Outlines 3" in text and "Segmentation ich-unet 2.3.4" in text


def test_reports_use_reportlabs_c_accelerator() -> None:
    # Without rl-accel reportlab falls back to pure-Python encoders that cost about a third of a
    # report's time; the dependency is declared, so it must be the one in use.
    from reportlab.lib import rl_accel

    assert rl_accel.asciiBase85Encode.__module__ == "_rl_accel"
    data = bytes(range(256)) * 8
    assert rl_accel.asciiBase85Decode(rl_accel.asciiBase85Encode(data)) == data


NAMES_IN_OTHER_SCRIPTS = {
    "greek": ("Ελένη Παπαδοπούλου", "Δρ. Γιώργος Νικολάου"),
    "arabic": ("فاطمة الزهراء", "د. أحمد خالد"),
    "chinese": ("王小明", "李医生"),
}


@pytest.mark.parametrize("script", list(NAMES_IN_OTHER_SCRIPTS))
def test_names_in_other_scripts_come_back_from_both_reports(report: SliceReport, script: str) -> None:
    patient, clinician = NAMES_IN_OTHER_SCRIPTS[script]
    slice_pdf = render_slice_report(
        dataclasses.replace(report, patient_name=patient, requesting_clinician=clinician)
    )
    study_pdf = render_study_report(_study_report(patient_name=patient, requesting_clinician=clinician))  # type: ignore[arg-type]
    for pdf in (slice_pdf, study_pdf):
        text = _text(pdf)
        assert patient in text and clinician in text
        fonts = {
            str(font["/BaseFont"])
            for page in PdfReader(io.BytesIO(pdf)).pages
            for font in page["/Resources"]["/Font"].values()  # type: ignore[union-attr]
        }
        # Embedded TrueType subsets only: no built-in Helvetica that would print boxes.
        assert not any("Helvetica" in name for name in fonts), fonts


def test_the_service_refuses_to_start_without_the_report_fonts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_store: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app
    from app.services import reporting

    missing = tmp_path / "wqy-microhei.ttc"
    monkeypatch.setitem(reporting.FONT_FILES, reporting.FONT_CJK, (missing, "fonts-wqy-microhei"))
    reporting.register_fonts.cache_clear()
    try:
        with pytest.raises(reporting.ReportFontsMissing) as raised:
            reporting.register_fonts()
        assert str(missing) in str(raised.value)
        assert "apt-get install fonts-wqy-microhei" in str(raised.value)
        settings = Settings(
            data_dir=tmp_path / "data", model_store=model_store, default_model="ich-compact", api_keys=""
        )
        with pytest.raises(reporting.ReportFontsMissing), TestClient(create_app(settings)):
            pass
    finally:
        monkeypatch.undo()
        reporting.register_fonts.cache_clear()
