"""The out-of-scope check: every real head CT slice passes, images that are not head CT fail."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.imaging import decode_image
from ml.data.scope import ScopeThresholds, assess_scope, colourfulness
from tests.support import synthetic

DATA_DIR = Path(
    os.environ.get("ICH_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
)
needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir() and not os.environ.get("CI"), reason="datasets not available"
)


def encode(image: np.ndarray, extension: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(extension, image)
    assert ok
    return buffer.tobytes()


def test_colourfulness_is_zero_for_grey_and_high_for_photographs() -> None:
    grey = np.full((32, 32), 90, np.uint8)
    assert colourfulness(grey) == 0.0
    assert colourfulness(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)) == 0.0
    assert colourfulness(synthetic.colour_shapes()) > 60.0
    with pytest.raises(ValueError, match="shape"):
        colourfulness(np.zeros((4, 4, 2), np.uint8))


def test_decoder_keeps_the_colourfulness_of_a_colour_jpeg() -> None:
    decoded = decode_image(encode(synthetic.colour_shapes(), ".jpg"))
    assert decoded.pixels.ndim == 2
    assert decoded.metadata["colourfulness"] > 60.0


@pytest.mark.parametrize(("name", "image"), list(synthetic.not_head_ct().items()))
def test_images_that_are_not_head_ct_are_out_of_scope(name: str, image: np.ndarray) -> None:
    assessment = assess_scope(image)
    assert not assessment.in_scope, assessment
    assert assessment.reasons and all(reason.endswith(".") for reason in assessment.reasons)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("colour_shapes", "colour"),
        ("colour_head_photograph", "colour"),
        ("chest_radiograph", "skull"),
        ("blank_grey", "blank"),
        # Noise has no solid region for a head; inside a head-shaped outline it is not tissue.
        ("noise", "No head-shaped region"),
        ("noise_large", "No head-shaped region"),
        ("noise_in_head_shape", "noise-like"),
    ],
)
def test_each_kind_gets_its_reason(name: str, reason: str) -> None:
    reasons = assess_scope(synthetic.not_head_ct()[name]).reasons
    assert any(reason in text for text in reasons), reasons


def test_colour_measured_before_grey_conversion_is_used() -> None:
    photograph = synthetic.colour_head_photograph()
    grey = cv2.cvtColor(photograph, cv2.COLOR_BGR2GRAY)
    # Grey alone, the face passes as a head; only its colour gives it away.
    assert assess_scope(grey).in_scope
    assert not assess_scope(grey, colourfulness_value=colourfulness(photograph)).in_scope
    decoded = decode_image(encode(photograph))
    assert not assess_scope(decoded.pixels, decoded.metadata["colourfulness"]).in_scope


@needs_data
@pytest.mark.data
def test_a_head_ct_slice_is_in_scope_unless_its_dicom_says_another_modality() -> None:
    path = sorted((DATA_DIR / "rsna_dicom" / "dicom").glob("*.dcm"))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoded = decode_image(path.read_bytes())
    assessment = assess_scope(decoded.pixels, 0.0, decoded.metadata["modality"])
    assert assessment.in_scope, assessment
    assert assessment.reasons == []
    as_mr = assess_scope(decoded.pixels, 0.0, "MR")
    assert not as_mr.in_scope and as_mr.reasons == ["The DICOM modality is 'MR', not CT."]
    summary = assessment.to_dict()
    assert summary["in_scope"] is True and 0.0 < summary["rim_coverage"] <= 1.0


def test_thresholds_can_be_tightened() -> None:
    head = np.zeros((200, 200), np.uint8)
    cv2.ellipse(head, (100, 100), (70, 85), 0, 0, 360, 255, -1)
    cv2.ellipse(head, (100, 100), (62, 77), 0, 0, 360, 100, -1)
    head = cv2.GaussianBlur(head, (3, 3), 0)
    assert assess_scope(head).in_scope
    assert not assess_scope(head, thresholds=ScopeThresholds(min_head_fraction=0.9)).in_scope


@pytest.mark.slow
@needs_data
@pytest.mark.data
def test_every_real_slice_is_in_scope() -> None:
    """All 160 head_ct images, all 1,895 CT-ICH brain-window slices and all 23 RSNA DICOM files."""
    failures = []
    paths = sorted((DATA_DIR / "head_ct" / "images").glob("*.png"))
    paths += sorted(DATA_DIR.glob("ct_ich/Patients_CT/*/brain/*.jpg"))
    for path in paths:
        decoded = decode_image(path.read_bytes())
        assessment = assess_scope(decoded.pixels, decoded.metadata["colourfulness"])
        if not assessment.in_scope:
            failures.append((path.name, assessment.reasons))
    dicom_paths = sorted((DATA_DIR / "rsna_dicom" / "dicom").glob("*.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in dicom_paths:
            decoded = decode_image(path.read_bytes())
            assessment = assess_scope(decoded.pixels, 0.0, decoded.metadata["modality"])
            if not assessment.in_scope:
                failures.append((path.name, assessment.reasons))
    assert len(paths) + len(dicom_paths) == 160 + 1895 + 23
    assert failures == []


# ---------------------------------------------------------------------------------------------
# The measurements against a plain reference: one ray at a time, the head mask found again,
# np.median and one np.percentile per measurement. assess_scope must give the same numbers.


def reference_colourfulness(image: np.ndarray) -> float:
    colour = image[:, :, :3].astype(np.float32)
    first, second, third = colour[:, :, 0], colour[:, :, 1], colour[:, :, 2]
    red_green = first - second
    yellow_blue = 0.5 * (first + second) - third
    spread = float(np.hypot(red_green.std(), yellow_blue.std()))
    mean = float(np.hypot(red_green.mean(), yellow_blue.mean()))
    return spread + 0.3 * mean


def reference_rim_coverage(gray: np.ndarray, mask: np.ndarray, rays: int, depth: float) -> float:
    bright = max(0.45, float(np.percentile(gray[mask], 99.0)) - 0.15)
    rows, cols = np.nonzero(mask)
    centre_row, centre_col = rows.mean(), cols.mean()
    height, width = mask.shape
    steps = np.arange(0.0, float(np.hypot(height, width)), 0.5)
    covered = 0
    for angle in np.linspace(0.0, 2.0 * np.pi, rays, endpoint=False):
        ray_rows = np.round(centre_row + steps * np.sin(angle)).astype(int)
        ray_cols = np.round(centre_col + steps * np.cos(angle)).astype(int)
        valid = (ray_rows >= 0) & (ray_rows < height) & (ray_cols >= 0) & (ray_cols < width)
        ray_rows, ray_cols = ray_rows[valid], ray_cols[valid]
        inside = np.flatnonzero(mask[ray_rows, ray_cols])
        if inside.size == 0:
            continue
        outline = int(inside[-1])
        start = max(0, int(outline - max(2.0, depth * outline)))
        band = gray[ray_rows[start : outline + 1], ray_cols[start : outline + 1]]
        if band.size and float(band.max()) >= bright:
            covered += 1
    return covered / rays


def reference_measurements(image: np.ndarray, colour: float) -> dict[str, float]:
    from ml.data.preprocessing import head_mask, to_grayscale
    from ml.data.scope import _edge_contact, _ellipse_fit

    limits = ScopeThresholds()
    gray = to_grayscale(image)
    measures = {"colourfulness": colour, "contrast": float(gray.std())}
    mask = head_mask(gray)
    assert mask is not None
    smooth = cv2.GaussianBlur(gray, (5, 5), 1.5)
    low, high = np.percentile(gray[mask], [5.0, 95.0])
    measures.update(
        head_fraction=float(mask.mean()),
        ellipse_fit=_ellipse_fit(mask),
        edge_contact=_edge_contact(mask),
        rim_coverage=reference_rim_coverage(gray, mask, limits.rays, limits.rim_depth),
        roughness=float(np.median(np.abs(gray - smooth)[mask]) / max(float(high - low), 1e-3)),
    )
    return measures


def measurements(assessment: object) -> dict[str, float]:
    names = ("colourfulness", "contrast", "head_fraction", "ellipse_fit", "edge_contact", "rim_coverage")
    return {name: getattr(assessment, name) for name in (*names, "roughness")}


@needs_data
@pytest.mark.data
def test_measurements_equal_the_reference_on_real_slices() -> None:
    """Every 8th head_ct image, every 60th CT-ICH slice and every RSNA file; with and without the mask."""
    from ml.data.preprocessing import PreprocessConfig, preprocess

    paths = sorted((DATA_DIR / "head_ct" / "images").glob("*.png"))[::8]
    paths += sorted(DATA_DIR.glob("ct_ich/Patients_CT/*/brain/*.jpg"))[::60]
    paths += sorted((DATA_DIR / "rsna_dicom" / "dicom").glob("*.dcm"))
    assert len(paths) >= 70
    grey_as_colour = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            data = path.read_bytes()
            decoded = decode_image(data)
            if path.suffix != ".dcm":
                raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                if raw.ndim == 3:
                    assert colourfulness(raw) == reference_colourfulness(raw), path.name
                    grey_as_colour += int(reference_colourfulness(raw) == 0.0)
            colour = float(decoded.metadata.get("colourfulness", 0.0))
            expected = reference_measurements(decoded.pixels, colour)
            mask = preprocess(decoded.pixels, PreprocessConfig()).head_mask
            assert mask is not None
            computed = assess_scope(decoded.pixels, colour)
            given_mask = assess_scope(decoded.pixels, colour, mask=mask)
            assert measurements(computed) == expected, path.name
            assert measurements(given_mask) == expected, path.name
            assert given_mask.reasons == computed.reasons and given_mask.in_scope
    # Both colourfulness paths were exercised: grey saved as RGB, and RGB with some colour.
    assert 0 < grey_as_colour


@pytest.mark.parametrize("rays", [1, 7, 72, 360])
def test_rim_coverage_equals_the_reference_on_synthetic_images(rays: int) -> None:
    from ml.data.preprocessing import head_mask, to_grayscale
    from ml.data.scope import _rim_coverage

    compared = 0
    for image in synthetic.not_head_ct().values():
        gray = to_grayscale(image)
        mask = head_mask(gray)
        if mask is None:
            continue
        bright = max(0.45, float(np.percentile(gray[mask], 99.0)) - 0.15)
        assert _rim_coverage(gray, mask, rays, 0.6, bright) == reference_rim_coverage(gray, mask, rays, 0.6)
        compared += 1
    assert compared >= 3


def test_a_head_mask_of_the_wrong_shape_is_refused() -> None:
    head = np.zeros((64, 64), np.uint8)
    cv2.ellipse(head, (32, 32), (20, 25), 0, 0, 360, 255, -1)
    with pytest.raises(ValueError, match="head mask"):
        assess_scope(head, mask=np.ones((32, 32), bool))


def test_preprocessing_exposes_the_head_mask_the_scope_check_uses() -> None:
    from ml.data.preprocessing import PreprocessConfig, head_mask, preprocess, to_grayscale

    head = np.zeros((200, 160), np.uint8)
    cv2.ellipse(head, (80, 100), (60, 80), 0, 0, 360, 255, -1)
    cv2.ellipse(head, (80, 100), (52, 72), 0, 0, 360, 100, -1)
    prepared = preprocess(head, PreprocessConfig())
    assert prepared.head_mask is not None
    assert np.array_equal(prepared.head_mask, head_mask(to_grayscale(head), ScopeThresholds().head_threshold))
    assert preprocess(head, PreprocessConfig(crop_to_head=False)).head_mask is None
    assert preprocess(np.zeros((64, 64), np.uint8)).head_mask is None
