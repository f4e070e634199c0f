"""Decoding uploaded or stored images (PNG, JPEG, DICOM) into pixels the models read.

The format is recognised from the content, never from a file name. DICOM pixel data become
Hounsfield units through the modality LUT and are then shown in the brain window, which is
how the training slices were exported.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ml.data.scope import colourfulness
from ml.data.windowing import BRAIN_WINDOW, Window

__all__ = [
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageDecodeError",
    "UnsupportedImageError",
    "decode_image",
    "dicom_dataset_to_image",
    "dicom_to_hounsfield",
    "read_dicom",
    "sniff_format",
]

SUPPORTED_FORMATS = ("png", "jpeg", "dicom")
DEFAULT_MAX_PIXELS = 50_000_000


class ImageDecodeError(ValueError):
    """The bytes claim a supported format but cannot be decoded."""


class UnsupportedImageError(ValueError):
    """The bytes are not a supported format, or use a variant this service cannot read."""


@dataclass
class DecodedImage:
    """Pixels ready for :func:`ml.data.preprocessing.preprocess`.

    ``pixels`` is 2-D uint8 (display grey levels) for every format; ``hounsfield`` holds
    the Hounsfield units of a DICOM slice; ``metadata`` holds the DICOM attributes a
    report needs (patient and study) and geometry (pixel spacing, position); for PNG and
    JPEG it holds ``colourfulness``, measured before the conversion to grey
    (:func:`ml.data.scope.colourfulness`).
    """

    format: str
    pixels: np.ndarray
    hounsfield: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` or ``None``, from the leading bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def _png_dimensions(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _decode_raster(data: bytes, kind: str, max_pixels: int) -> DecodedImage:
    if kind == "png":
        dimensions = _png_dimensions(data)
        if dimensions is None:
            raise ImageDecodeError("The PNG header is damaged.")
        if dimensions[0] * dimensions[1] > max_pixels:
            raise ImageDecodeError(
                f"The image claims {dimensions[0]} x {dimensions[1]} pixels, more than the "
                f"limit of {max_pixels:,}."
            )
    if kind == "jpeg" and b"\xff\xd9" not in data[-1024:]:
        # OpenCV decodes a cut-off JPEG without complaint and fills the missing rows with grey,
        # which the model would then read as anatomy.
        raise ImageDecodeError("The JPEG data are truncated (the end-of-image marker is missing).")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError(f"The {kind.upper()} data could not be decoded.") from exc
    if image is None or image.size == 0:
        raise ImageDecodeError(f"The {kind.upper()} data could not be decoded (truncated or corrupt).")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageDecodeError(f"The image has more than {max_pixels:,} pixels.")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    # Measured before the grey conversion below, which would erase it; the scope check reads it.
    colour = colourfulness(image)
    if image.dtype != np.uint8:
        # 16-bit PNGs: stretch to 8 bits so every format reaches preprocessing alike.
        values = image.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        image = np.round(scaled * 255.0).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return DecodedImage(format=kind, pixels=np.ascontiguousarray(image), metadata={"colourfulness": colour})


def dicom_to_hounsfield(dataset: Any) -> np.ndarray:
    """Hounsfield units of a single-frame CT dataset, through its modality LUT.

    Raises:
        UnsupportedImageError: compressed pixel data without a decoder, or several frames.
        ImageDecodeError: missing or damaged pixel data.
    """
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in dataset:
        raise ImageDecodeError("The DICOM file holds no pixel data.")
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise UnsupportedImageError(
            f"The DICOM transfer syntax {name} cannot be decoded here; send uncompressed "
            "(Explicit or Implicit VR Little Endian) DICOM."
        ) from exc
    except Exception as exc:
        raise ImageDecodeError(f"The DICOM pixel data are damaged: {exc}") from exc
    if pixels.ndim != 2:
        raise UnsupportedImageError(
            f"Only single-frame greyscale DICOM slices are accepted; this one has shape {pixels.shape}."
        )
    _check_rescale(dataset)
    try:
        hounsfield = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"The DICOM rescale values are not numbers: {exc}") from exc
    if not np.isfinite(hounsfield).all():
        raise ImageDecodeError("The DICOM rescale values give non-finite Hounsfield units.")
    return hounsfield


# CT scanners write RescaleSlope 1 (rarely 0.5 or 2) and intercepts of about -1024; values far
# outside these bounds turn every pixel into bone or air and cannot come from a CT slice.
MAX_RESCALE_SLOPE = 100.0
MAX_RESCALE_INTERCEPT = 100_000.0


def _check_rescale(dataset: Any) -> None:
    """Refuse RescaleSlope and RescaleIntercept values that no CT scanner writes."""
    for keyword, limit in (("RescaleSlope", MAX_RESCALE_SLOPE), ("RescaleIntercept", MAX_RESCALE_INTERCEPT)):
        raw = dataset.get(keyword)
        if raw is None or raw == "":
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise ImageDecodeError(f"The DICOM {keyword} {raw!r} is not a number.") from exc
        if not np.isfinite(value) or abs(value) > limit or (keyword == "RescaleSlope" and value == 0.0):
            raise ImageDecodeError(
                f"The DICOM {keyword} is {value:g}, outside what a CT scanner writes "
                f"(|{keyword}| up to {limit:g}{', not 0' if keyword == 'RescaleSlope' else ''})."
            )


def _dicom_metadata(dataset: Any) -> dict[str, Any]:
    def text(keyword: str) -> str | None:
        value = dataset.get(keyword)
        return str(value) if value not in (None, "") else None

    spacing = dataset.get("PixelSpacing")
    position = dataset.get("ImagePositionPatient")
    orientation = dataset.get("ImageOrientationPatient")
    return {
        "patient_name": text("PatientName"),
        "patient_id": text("PatientID"),
        "study_description": text("StudyDescription"),
        "study_date": text("StudyDate"),
        "modality": text("Modality"),
        "study_instance_uid": text("StudyInstanceUID"),
        "series_instance_uid": text("SeriesInstanceUID"),
        "sop_instance_uid": text("SOPInstanceUID"),
        "pixel_spacing_mm": [float(v) for v in spacing] if spacing else None,
        "slice_thickness_mm": float(dataset.SliceThickness) if dataset.get("SliceThickness") else None,
        "image_position": [float(v) for v in position] if position else None,
        "image_orientation": [float(v) for v in orientation] if orientation else None,
    }


def _image_size(dataset: Any) -> tuple[int, int]:
    return int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)


def read_dicom(data: bytes) -> Any:
    """Parse DICOM bytes into a pydicom dataset, every element checked.

    Raises:
        ImageDecodeError: the bytes are not readable DICOM.
    """
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        # pydicom parses elements lazily: touch every one now, so that a truncated or damaged
        # header fails here as ImageDecodeError instead of later as a pydicom or struct error.
        dataset.walk(lambda _dataset, _element: None)
        _dicom_metadata(dataset)
        _image_size(dataset)
    except (
        InvalidDicomError,
        BytesLengthException,
        struct.error,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        NotImplementedError,
    ) as exc:
        raise ImageDecodeError(f"The DICOM file could not be read: {exc}") from exc
    return dataset


def dicom_dataset_to_image(
    dataset: Any, window: Window = BRAIN_WINDOW, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Hounsfield units and windowed pixels of a dataset returned by :func:`read_dicom`."""
    rows, columns = _image_size(dataset)
    if rows * columns > max_pixels:
        raise ImageDecodeError(f"The DICOM image claims {rows} x {columns} pixels, over the limit.")
    hounsfield = dicom_to_hounsfield(dataset)
    return DecodedImage(
        format="dicom",
        pixels=window.apply_uint8(hounsfield),
        hounsfield=hounsfield,
        metadata=_dicom_metadata(dataset),
    )


def decode_image(
    data: bytes, window: Window = BRAIN_WINDOW, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes; the format is sniffed from the content.

    Raises:
        UnsupportedImageError: not one of :data:`SUPPORTED_FORMATS`.
        ImageDecodeError: a supported format that is empty, truncated or corrupt.
    """
    if not data:
        raise ImageDecodeError("The file is empty.")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImageError(
            "The file is not a PNG, JPEG or DICOM image (the content was checked, not the name)."
        )
    if kind == "dicom":
        return dicom_dataset_to_image(read_dicom(data), window, max_pixels)
    return _decode_raster(data, kind, max_pixels)
