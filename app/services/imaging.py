"""The images the service reads and writes: uploads decoded, PNGs encoded, captioned and labelled.

:func:`decode_upload` turns uploaded bytes into pixels through the decoder training and evaluation
use, its errors mapped to the service's domain errors; :func:`encode_png` and :func:`with_png_text`
write PNG files with text chunks, :func:`caption` burns a line of text into an image, and
:func:`labelled_overlay_png` is the Grad-CAM overlay as served: captioned with its model and
"Not for clinical use", and saying so as PNG text.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL.PngImagePlugin import PngInfo, putchunk

from app.core.errors import InvalidUpload, UnsupportedImage
from ml.data.imaging import DecodedImage, ImageDecodeError, UnsupportedImageError, decode_image


def decode_upload(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode uploaded bytes, mapping decoder errors to the service's domain errors."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except UnsupportedImageError as exc:
        raise UnsupportedImage(f"{exc} Supported formats: PNG, JPEG, DICOM.") from exc
    except ImageDecodeError as exc:
        raise InvalidUpload(str(exc)) from exc


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a greyscale, RGB or RGBA uint8 image."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        pixels = cv2.cvtColor(image, code)
    else:
        pixels = image
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding failed.")
    return buffer.tobytes()


# A PNG opens with its 8-byte signature and then its header chunk (IHDR: length, type, 13 bytes,
# CRC); text chunks may stand anywhere between the header and the image data.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER_END = 8 + 4 + 4 + 13 + 4


def with_png_text(data: bytes, entries: dict[str, str]) -> bytes:
    """The PNG with one text chunk per entry inserted after its header chunk.

    Pillow's :class:`~PIL.PngImagePlugin.PngInfo` encodes each entry (``tEXt`` for Latin-1 text,
    ``iTXt`` for any other) and its ``putchunk`` writes the chunk with its CRC. The pixels stay as
    OpenCV compressed them: a Pillow save of a 512 x 512 RGB overlay takes about six times as long.
    """
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("Not a PNG image.")
    info = PngInfo()
    for keyword, text in entries.items():
        info.add_text(keyword, text)
    chunks = io.BytesIO()
    for kind, body, _after_image_data in info.chunks:
        putchunk(chunks, kind, body)
    return data[:_HEADER_END] + chunks.getvalue() + data[_HEADER_END:]


OVERLAY_WARNING = "Not for clinical use"


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """The image with ``text`` in white on a dark band along its bottom edge, burned into the
    pixels (so it stays with the image wherever it is copied); the text shrinks to fit."""
    captioned = np.ascontiguousarray(image.copy())
    height, width = captioned.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    margin = max(2, width // 100)
    scale = max(0.3, min(1.0, width / 900.0))
    (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, 1)
    if text_width > width - 2 * margin:
        scale *= (width - 2 * margin) / text_width
        (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, 1)
    band = min(height, text_height + baseline + 2 * margin)
    captioned[height - band :] = (captioned[height - band :] * 0.25).astype(np.uint8)
    white = (255, 255, 255) if captioned.ndim == 3 else 255
    cv2.putText(captioned, text, (margin, height - margin - baseline), font, scale, white, 1, cv2.LINE_AA)
    return captioned


def labelled_overlay_png(overlay: np.ndarray, model_name: str, model_version: str) -> bytes:
    """PNG of a Grad-CAM overlay that names its model and says it is not for clinical use, both
    in the pixels (a caption band) and as PNG text."""
    label = f"{model_name} {model_version} - {OVERLAY_WARNING}"
    return with_png_text(
        encode_png(caption(overlay, label)),
        {
            "Software": f"ICH Detect, model {model_name} {model_version}",
            "Description": "Grad-CAM heat map over the slice: where the classifier looked.",
            "Disclaimer": f"AI generated. {OVERLAY_WARNING}.",
        },
    )
