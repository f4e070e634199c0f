"""Every Grad-CAM overlay names its model and says it is not for clinical use."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.services.imaging import OVERLAY_WARNING, caption, encode_png, labelled_overlay_png, with_png_text


def png_text(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.text)  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", [(300, 400, 3), (300, 400), (40, 60, 3)])
def test_caption_darkens_a_bottom_band_and_keeps_the_rest(shape: tuple[int, ...]) -> None:
    image = np.full(shape, 200, np.uint8)
    captioned = caption(image, "ich-compact 1.0.0 - Not for clinical use")
    assert captioned.shape == image.shape and captioned.dtype == np.uint8
    height = shape[0]
    # The top two thirds are untouched; the bottom rows are dark with white text on them.
    assert np.array_equal(captioned[: height * 2 // 3], image[: height * 2 // 3])
    bottom = captioned[-max(3, height // 20) :]
    assert (bottom < 100).mean() > 0.5
    # Text is drawn on the band (antialiased: brighter than the darkened background).
    band = captioned[height * 2 // 3 :][captioned[height * 2 // 3 :] < 200]
    assert (band > 60).any()


def test_caption_text_fits_a_narrow_image() -> None:
    image = np.zeros((120, 90, 3), np.uint8)
    captioned = caption(image, "a long model name 10.20.30 - Not for clinical use")
    # White text pixels stay inside the image's width with a margin (not clipped at the edge).
    columns = np.flatnonzero((captioned > 128).any(axis=(0, 2)))
    assert columns.size and columns.max() < 90 - 1


def test_labelled_overlay_png_carries_model_and_warning_as_text() -> None:
    overlay = np.full((64, 64, 3), 120, np.uint8)
    data = labelled_overlay_png(overlay, "ich-compact", "1.2.3")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (64, 64, 3)
    text = png_text(data)
    assert "ich-compact 1.2.3" in text["Software"]
    assert OVERLAY_WARNING in text["Disclaimer"]


def test_png_text_keeps_the_pixels_and_any_script() -> None:
    image = np.arange(48 * 32 * 3, dtype=np.uint32).reshape(48, 32, 3).astype(np.uint8)
    plain = encode_png(image)
    data = with_png_text(plain, {"Software": "ICH Detect, model ich-x 1.0.0", "Title": "脑出血 – Blutung"})
    with Image.open(io.BytesIO(data)) as opened:
        assert np.array_equal(np.asarray(opened.convert("RGB")), image)
        opened.load()
        # Latin-1 text is a tEXt chunk; other scripts go to iTXt (UTF-8) instead of being replaced.
        assert dict(opened.text) == {  # type: ignore[attr-defined]
            "Software": "ICH Detect, model ich-x 1.0.0",
            "Title": "脑出血 – Blutung",
        }
    assert data.count(b"tEXt") == 1 and data.count(b"iTXt") == 1
    # The image data are the encoder's, byte for byte.
    assert data.endswith(plain[33:])
    with pytest.raises(ValueError, match="Not a PNG"):
        with_png_text(b"\xff\xd8\xff" + bytes(40), {"Software": "x"})


def test_served_overlay_names_the_model(client: TestClient, png_bytes: bytes) -> None:
    created = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes, "image/png")})
    assert created.status_code == 201, created.text
    body = created.json()
    overlay = client.get(body["links"]["overlay"]).content
    text = png_text(overlay)
    assert f"{body['model']['name']} {body['model']['version']}" in text["Software"]
    assert "Not for clinical use" in text["Disclaimer"]
    original = cv2.imdecode(np.frombuffer(client.get(body["links"]["original"]).content, np.uint8), 0)
    decoded = cv2.imdecode(np.frombuffer(overlay, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == original.shape
