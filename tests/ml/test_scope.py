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
        ("noise", "noise-like"),
        ("noise_large", "No head-shaped region"),
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
