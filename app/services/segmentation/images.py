"""The outlines as images: the class map and the coloured outlines as PNGs, and both over the slice.

``mask.png`` holds each pixel's class (0..5, one channel, at the uploaded image's size) and
``contours.png`` the outlines in each subtype's colour (RGBA, transparent elsewhere); both name the
model that drew them and say "Not for clinical use" as PNG text.
"""

from __future__ import annotations

import cv2
import numpy as np

from app.services.imaging import encode_png, with_png_text
from app.services.inference import SliceSegmentation
from ml.data.segmentation import SUBTYPES
from ml.segmenter import contour_overlay


def _provenance(segmentation: SliceSegmentation) -> dict[str, str]:
    """The PNG text that names the model that drew the outlines and says they are not for clinical use."""
    return {
        "Software": f"ICH Detect, segmentation model {segmentation.model_name} {segmentation.model_version}",
        "Disclaimer": "AI generated. Not for clinical use.",
    }


def mask_png(segmentation: SliceSegmentation) -> bytes:
    """The class of each pixel as a PNG at the uploaded image's size, naming the model that drew it
    and saying that it is not for clinical use (PNG text)."""
    classes = ", ".join(f"{index} {name}" for index, name in enumerate(SUBTYPES, start=1))
    return with_png_text(
        encode_png(segmentation.result.class_map),
        {"Description": f"Class of each pixel: 0 none, {classes}.", **_provenance(segmentation)},
    )


def contours_png(segmentation: SliceSegmentation) -> bytes:
    """The outlines, one colour per subtype, as a transparent PNG at the uploaded image's size, with
    the same provenance text as :func:`mask_png`."""
    return with_png_text(
        encode_png(contour_overlay(segmentation.result.class_map)),
        {
            "Description": "Outlines of possible haemorrhage, one colour per subtype.",
            **_provenance(segmentation),
        },
    )


def composite_png(image_png: bytes, contours_png: bytes) -> bytes:
    """The outlines drawn over the slice, as one RGB PNG (for the PDF report)."""
    image = cv2.imdecode(np.frombuffer(image_png, np.uint8), cv2.IMREAD_COLOR)
    contours = cv2.imdecode(np.frombuffer(contours_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or contours is None or contours.ndim != 3 or contours.shape[2] != 4:
        raise ValueError("The stored slice or outline image is not readable.")
    if contours.shape[:2] != image.shape[:2]:
        contours = cv2.resize(contours, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    alpha = contours[:, :, 3:4].astype(np.float32) / 255.0
    blended = image.astype(np.float32) * (1.0 - alpha) + contours[:, :, :3].astype(np.float32) * alpha
    ok, buffer = cv2.imencode(".png", np.round(blended).astype(np.uint8))
    if not ok:
        raise RuntimeError("PNG encoding failed.")
    return buffer.tobytes()
