"""Tests of :mod:`ml.data.imaging`: format sniffing, decoding real PNG, JPEG and DICOM files,
Hounsfield units and the brain window, and hostile or damaged input."""

from __future__ import annotations

import csv
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from ml.data.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    UnsupportedImageError,
    decode_image,
    sniff_format,
)
from ml.data.windowing import BONE_WINDOW, Window

DATA_DIR = Path(
    os.environ.get("ICH_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
)
RSNA_DIR = DATA_DIR / "rsna_dicom"
HEAD_CT_PNG = DATA_DIR / "head_ct" / "images" / "000.png"
CT_ICH_JPEG = DATA_DIR / "ct_ich" / "Patients_CT" / "050" / "brain" / "1.jpg"
# One file of each VR encoding, both pixel representations.
IMPLICIT_UNSIGNED_DICOM = RSNA_DIR / "dicom" / "ID_0000aee4b.dcm"
EXPLICIT_SIGNED_DICOM = RSNA_DIR / "dicom" / "ID_000a18499.dcm"
PADDING_HU = (-2048.0, -3024.0)

needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir() and not os.environ.get("CI"), reason=f"datasets not found at {DATA_DIR}"
)
real_data = [pytest.mark.slow, needs_data]

# The RSNA files carry anonymised UIDs such as "ID_0000aee4b", which pydicom flags on every read.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")


def _read_metadata() -> list[dict[str, str]]:
    path = RSNA_DIR / "metadata.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


RSNA_ROWS = _read_metadata()


def _expected_brain_window(hounsfield: np.ndarray) -> np.ndarray:
    """Level 40, width 80: 0 HU and below is black, 80 HU and above is white."""
    return np.round(np.clip(hounsfield.astype(np.float64), 0.0, 80.0) / 80.0 * 255.0)


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _with_png_dimensions(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming ``width`` x ``height`` (and a matching CRC)."""
    header = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def _modified_dicom(tmp_path: Path, source: Path, modify: Callable[[Any], None]) -> bytes:
    """A real DICOM file, changed by ``modify`` and saved under ``tmp_path``."""
    dataset = pydicom.dcmread(source)
    modify(dataset)
    target = tmp_path / f"modified_{source.name}"
    dataset.save_as(target)
    return target.read_bytes()


def _header_end(data: bytes) -> int:
    """Offset just past the Pixel Data element's tag and length, whatever the VR encoding."""
    position = data.find(b"\xe0\x7f\x10\x00")
    assert position > 0
    return position + 12


class TestSniffFormat:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "png"),
            (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "jpeg"),
            (b"\x00" * 128 + b"DICM" + b"\x02\x00", "dicom"),
            (b"\x00" * 128 + b"DICM", "dicom"),
            (b"", None),
            (b"GIF89a" + b"\x00" * 200, None),
            (b"%PDF-1.7\n" + b"\x00" * 200, None),
            (b"\x89PNG", None),
            (b"\x00" * 127 + b"DICM", None),
            (b"DICM" + b"\x00" * 200, None),
            (b"\x89png\r\n\x1a\n" + b"\x00" * 20, None),
        ],
    )
    def test_leading_bytes(self, data: bytes, expected: str | None) -> None:
        assert sniff_format(data) == expected

    @pytest.mark.parametrize(
        ("path", "expected"),
        [(HEAD_CT_PNG, "png"), (CT_ICH_JPEG, "jpeg"), (IMPLICIT_UNSIGNED_DICOM, "dicom")],
    )
    @pytest.mark.slow
    @needs_data
    def test_real_files(self, path: Path, expected: str) -> None:
        assert sniff_format(path.read_bytes()) == expected

    def test_content_not_name_decides(self, tmp_path: Path) -> None:
        path = tmp_path / "scan.dcm"
        path.write_bytes(_png(np.zeros((4, 4), dtype=np.uint8)))
        assert sniff_format(path.read_bytes()) == "png"


class TestRealRasterImages:
    pytestmark = real_data

    def test_png_from_head_ct(self) -> None:
        decoded = decode_image(HEAD_CT_PNG.read_bytes())
        reference = cv2.imread(str(HEAD_CT_PNG), cv2.IMREAD_UNCHANGED)
        assert reference is not None and reference.ndim == 3
        assert decoded.format == "png"
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.ndim == 2
        assert decoded.pixels.shape == reference.shape[:2]
        # The RGB channels hold the same grey, so the grey image is any one channel.
        np.testing.assert_array_equal(decoded.pixels, reference[..., 0])
        assert decoded.hounsfield is None
        # Grey stored as RGB: no colour, and the only metadata of a PNG is its colourfulness.
        assert decoded.metadata == {"colourfulness": 0.0}

    def test_jpeg_from_ct_ich(self) -> None:
        decoded = decode_image(CT_ICH_JPEG.read_bytes())
        reference = cv2.imread(str(CT_ICH_JPEG), cv2.IMREAD_GRAYSCALE)
        assert decoded.format == "jpeg"
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.shape == (650, 650)
        np.testing.assert_array_equal(decoded.pixels, reference)
        assert decoded.hounsfield is None

    def test_pixel_limit_applies_after_decoding_a_jpeg(self) -> None:
        with pytest.raises(ImageDecodeError, match="more than 1,000 pixels"):
            decode_image(CT_ICH_JPEG.read_bytes(), max_pixels=1_000)


@pytest.mark.slow
@needs_data
class TestRealDicom:
    def test_metadata_describes_the_variety(self) -> None:
        assert len(RSNA_ROWS) == 23
        assert sum(row["pixel_representation"] == "0" for row in RSNA_ROWS) == 13
        assert sum(row["pixel_representation"] == "1" for row in RSNA_ROWS) == 10
        assert sum(float(row["hu_min"]) in PADDING_HU for row in RSNA_ROWS) == 9
        assert sum(float(row["rescale_intercept"]) == 0.0 for row in RSNA_ROWS) == 1

    @pytest.mark.parametrize("row", RSNA_ROWS, ids=[row["sop_id"] for row in RSNA_ROWS])
    def test_hounsfield_units_and_brain_window(self, row: dict[str, str]) -> None:
        path = RSNA_DIR / row["file"]
        decoded = decode_image(path.read_bytes())
        assert decoded.format == "dicom"
        hounsfield = decoded.hounsfield
        assert hounsfield is not None
        assert hounsfield.shape == (int(row["rows"]), int(row["cols"]))

        stored = pydicom.dcmread(path).pixel_array
        assert stored.dtype == (np.int16 if row["pixel_representation"] == "1" else np.uint16)
        expected = stored.astype(np.float64) * float(row["rescale_slope"]) + float(row["rescale_intercept"])
        np.testing.assert_array_equal(hounsfield, expected)
        assert float(hounsfield.min()) == float(row["hu_min"])
        assert float(hounsfield.max()) == float(row["hu_max"])

        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.shape == hounsfield.shape
        window = _expected_brain_window(hounsfield)
        assert np.abs(decoded.pixels.astype(np.float64) - window).max() <= 1.0
        assert (decoded.pixels[hounsfield <= 0] == 0).all()
        assert (decoded.pixels[hounsfield >= 80] == 255).all()
        brain = (hounsfield > 0) & (hounsfield < 80)
        assert brain.any()
        assert ((decoded.pixels[brain] > 0) & (decoded.pixels[brain] < 255)).all()

    @pytest.mark.parametrize("row", RSNA_ROWS, ids=[row["sop_id"] for row in RSNA_ROWS])
    def test_padding_is_kept_in_hounsfield_units(self, row: dict[str, str]) -> None:
        hounsfield = decode_image((RSNA_DIR / row["file"]).read_bytes()).hounsfield
        assert hounsfield is not None
        hu_min = float(row["hu_min"])
        if hu_min in PADDING_HU:
            padded = hounsfield == hu_min
            # Padding fills the corners outside the scanner's circular field of view.
            assert padded[0, 0] and padded[-1, -1] and padded[0, -1] and padded[-1, 0]
            assert padded.mean() > 0.1
        else:
            assert hu_min > -1025
            assert not np.isin(hounsfield, PADDING_HU).any()

    def test_signed_pixels_with_padding(self) -> None:
        decoded = decode_image(EXPLICIT_SIGNED_DICOM.read_bytes())
        stored = pydicom.dcmread(EXPLICIT_SIGNED_DICOM).pixel_array
        assert stored.dtype == np.int16
        assert int(stored.min()) == -2000
        assert decoded.hounsfield is not None
        assert float(decoded.hounsfield.min()) == -2000 - 1024

    def test_intercept_zero_keeps_stored_values(self) -> None:
        (row,) = [row for row in RSNA_ROWS if float(row["rescale_intercept"]) == 0.0]
        path = RSNA_DIR / row["file"]
        decoded = decode_image(path.read_bytes())
        assert decoded.hounsfield is not None
        np.testing.assert_array_equal(decoded.hounsfield, pydicom.dcmread(path).pixel_array)
        assert float(decoded.hounsfield.min()) == -3024

    def test_multi_valued_window_center_does_not_set_the_window(self) -> None:
        dataset = pydicom.dcmread(IMPLICIT_UNSIGNED_DICOM)
        assert dataset["WindowCenter"].VM == 2
        decoded = decode_image(IMPLICIT_UNSIGNED_DICOM.read_bytes())
        assert decoded.hounsfield is not None
        # The stored window (36/80) is ignored: the model sees the training window, 40/80.
        file_window = Window(float(dataset.WindowCenter[0]), float(dataset.WindowWidth[0]))
        assert file_window.center == 36.0
        assert not np.array_equal(decoded.pixels, file_window.apply_uint8(decoded.hounsfield))
        window = _expected_brain_window(decoded.hounsfield)
        assert np.abs(decoded.pixels.astype(np.float64) - window).max() <= 1.0

    def test_other_window_changes_pixels_not_hounsfield(self) -> None:
        data = EXPLICIT_SIGNED_DICOM.read_bytes()
        brain = decode_image(data)
        bone = decode_image(data, window=BONE_WINDOW)
        assert brain.hounsfield is not None and bone.hounsfield is not None
        np.testing.assert_array_equal(brain.hounsfield, bone.hounsfield)
        assert not np.array_equal(brain.pixels, bone.pixels)
        # Bone window: -800 HU and below is black, 2000 HU and above is white.
        assert (bone.pixels[bone.hounsfield <= -800] == 0).all()

    @pytest.mark.parametrize("row", RSNA_ROWS, ids=[row["sop_id"] for row in RSNA_ROWS])
    def test_metadata(self, row: dict[str, str]) -> None:
        path = RSNA_DIR / row["file"]
        metadata = decode_image(path.read_bytes()).metadata
        dataset = pydicom.dcmread(path)
        assert metadata["patient_id"] == row["patient_id"]
        assert metadata["sop_instance_uid"] == row["sop_id"]
        assert metadata["modality"] == "CT"
        assert metadata["study_instance_uid"] == str(dataset.StudyInstanceUID)
        assert metadata["series_instance_uid"] == str(dataset.SeriesInstanceUID)
        assert metadata["pixel_spacing_mm"] == [float(value) for value in dataset.PixelSpacing]
        assert len(metadata["image_position"]) == 3
        assert len(metadata["image_orientation"]) == 6
        assert all(isinstance(value, float) for value in metadata["image_position"])
        for key in ("patient_name", "study_description", "study_date", "slice_thickness_mm"):
            assert key in metadata


class TestHostileInput:
    def test_empty_bytes(self) -> None:
        with pytest.raises(ImageDecodeError, match="empty"):
            decode_image(b"")

    @pytest.mark.parametrize("seed", range(5))
    def test_random_bytes(self, seed: int) -> None:
        data = np.random.default_rng(seed).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
        assert sniff_format(data) is None
        with pytest.raises(UnsupportedImageError, match="not a PNG, JPEG or DICOM"):
            decode_image(data)

    @pytest.mark.parametrize("data", [b"hello", b"\x00" * 1000, b"GIF89a" + b"\x01" * 100])
    def test_other_formats(self, data: bytes) -> None:
        with pytest.raises(UnsupportedImageError):
            decode_image(data)

    @pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 0.9, 0.999])
    @pytest.mark.slow
    @needs_data
    def test_truncated_png(self, fraction: float) -> None:
        data = HEAD_CT_PNG.read_bytes()
        with pytest.raises(ImageDecodeError):
            decode_image(data[: int(len(data) * fraction)])

    @pytest.mark.parametrize("length", [8, 16, 23, 33])
    def test_png_cut_inside_its_header(self, length: int) -> None:
        data = _png(np.full((32, 32), 128, dtype=np.uint8))
        with pytest.raises(ImageDecodeError):
            decode_image(data[:length])

    @pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 0.9, 0.999])
    @pytest.mark.slow
    @needs_data
    def test_truncated_jpeg(self, fraction: float) -> None:
        data = CT_ICH_JPEG.read_bytes()
        with pytest.raises(ImageDecodeError):
            decode_image(data[: int(len(data) * fraction)])

    @pytest.mark.parametrize("length", [3, 4, 20, 200])
    def test_jpeg_cut_inside_its_header(self, length: int) -> None:
        ok, encoded = cv2.imencode(".jpg", np.full((32, 32), 128, dtype=np.uint8))
        assert ok
        with pytest.raises(ImageDecodeError):
            decode_image(encoded.tobytes()[:length])

    @pytest.mark.parametrize("path", [IMPLICIT_UNSIGNED_DICOM, EXPLICIT_SIGNED_DICOM], ids=lambda p: p.stem)
    @pytest.mark.slow
    @needs_data
    def test_truncated_dicom_at_every_header_byte(self, path: Path) -> None:
        data = path.read_bytes()
        header_end = _header_end(data)
        cuts = list(range(132, header_end + 16)) + [int(len(data) * f) for f in (0.3, 0.6, 0.9, 0.999)]
        wrong: dict[int, str] = {}
        for cut in cuts:
            try:
                decode_image(data[:cut])
            except ImageDecodeError:
                continue
            except Exception as exc:
                wrong[cut] = f"{type(exc).__name__}: {exc}"
            else:
                wrong[cut] = "decoded without error"
        assert not wrong, f"cuts not raising ImageDecodeError: {dict(list(wrong.items())[:5])}"

    def test_dicom_with_only_a_preamble(self) -> None:
        with pytest.raises(ImageDecodeError):
            decode_image(b"\x00" * 128 + b"DICM")

    def test_png_claiming_huge_dimensions(self) -> None:
        data = _with_png_dimensions(_png(np.zeros((8, 8), dtype=np.uint8)), 50_000, 50_000)
        assert sniff_format(data) == "png"
        with pytest.raises(ImageDecodeError) as raised:
            decode_image(data)
        message = str(raised.value)
        assert "50000 x 50000" in message
        assert "limit" in message and f"{DEFAULT_MAX_PIXELS:,}" in message

    def test_png_over_a_custom_limit(self) -> None:
        data = _png(np.zeros((40, 30), dtype=np.uint8))
        assert decode_image(data, max_pixels=1200).pixels.shape == (40, 30)
        with pytest.raises(ImageDecodeError, match="30 x 40"):
            decode_image(data, max_pixels=1199)

    def test_sixteen_bit_png_is_stretched_to_eight_bits(self) -> None:
        image = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
        decoded = decode_image(_png(image))
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.ndim == 2
        # (value - 1000) / 4000 * 255: 0, 63.75, 127.5, 255.
        np.testing.assert_array_equal(decoded.pixels, np.array([[0, 64], [128, 255]], dtype=np.uint8))

    def test_constant_sixteen_bit_png_is_black(self) -> None:
        decoded = decode_image(_png(np.full((5, 7), 4000, dtype=np.uint16)))
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.shape == (5, 7)
        assert (decoded.pixels == 0).all()

    def test_rgba_png_drops_alpha(self) -> None:
        grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
        decoded = decode_image(_png(rgba))
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.ndim == 2
        np.testing.assert_array_equal(decoded.pixels, grey)

    def test_colour_png_becomes_grey(self) -> None:
        bgr = np.zeros((2, 2, 3), dtype=np.uint8)
        bgr[..., 2] = 255
        decoded = decode_image(_png(bgr))
        assert decoded.pixels.shape == (2, 2)
        # Pure red in ITU-R BT.601 luma: 0.299 * 255.
        assert np.abs(decoded.pixels.astype(int) - 76).max() <= 1


@pytest.mark.slow
@needs_data
class TestSyntheticDicom:
    def test_without_pixel_data(self, tmp_path: Path) -> None:
        def drop_pixels(dataset: Any) -> None:
            del dataset.PixelData

        data = _modified_dicom(tmp_path, EXPLICIT_SIGNED_DICOM, drop_pixels)
        assert sniff_format(data) == "dicom"
        with pytest.raises(ImageDecodeError, match="no pixel data"):
            decode_image(data)

    def test_undecodable_jpeg_2000(self, tmp_path: Path) -> None:
        def compress(dataset: Any) -> None:
            dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
            dataset.PixelData = encapsulate([b"\x00\x01 not a JPEG 2000 codestream " * 8])
            dataset["PixelData"].VR = "OB"

        data = _modified_dicom(tmp_path, EXPLICIT_SIGNED_DICOM, compress)
        with pytest.raises(UnsupportedImageError) as raised:
            decode_image(data)
        message = str(raised.value)
        assert "JPEG 2000" in message
        assert "uncompressed" in message

    def test_multi_frame(self, tmp_path: Path) -> None:
        def two_frames(dataset: Any) -> None:
            dataset.NumberOfFrames = 2
            dataset.PixelData = dataset.PixelData * 2

        data = _modified_dicom(tmp_path, EXPLICIT_SIGNED_DICOM, two_frames)
        with pytest.raises(UnsupportedImageError, match="single-frame"):
            decode_image(data)

    def test_claiming_too_many_pixels(self, tmp_path: Path) -> None:
        def huge(dataset: Any) -> None:
            dataset.Rows = 20_000
            dataset.Columns = 20_000

        data = _modified_dicom(tmp_path, EXPLICIT_SIGNED_DICOM, huge)
        with pytest.raises(ImageDecodeError, match="20000 x 20000 pixels, over the limit"):
            decode_image(data)

    def test_rescale_slope_and_intercept_are_applied(self, tmp_path: Path) -> None:
        def rescale(dataset: Any) -> None:
            dataset.RescaleSlope = 2
            dataset.RescaleIntercept = -100

        data = _modified_dicom(tmp_path, IMPLICIT_UNSIGNED_DICOM, rescale)
        decoded = decode_image(data)
        stored = pydicom.dcmread(IMPLICIT_UNSIGNED_DICOM).pixel_array.astype(np.float64)
        np.testing.assert_array_equal(decoded.hounsfield, stored * 2 - 100)

    def test_non_numeric_rescale_intercept(self) -> None:
        data = bytearray(EXPLICIT_SIGNED_DICOM.read_bytes())
        # Explicit VR little endian: tag, "DS", 2-byte length, value.
        position = data.find(b"\x28\x00\x52\x10DS")
        assert position > 0
        (length,) = struct.unpack("<H", data[position + 6 : position + 8])
        data[position + 8 : position + 8 + length] = b"abcdef"[:length].ljust(length)
        with pytest.raises(ImageDecodeError, match="(?i)rescale"):
            decode_image(bytes(data))

    def test_unknown_value_representation(self) -> None:
        data = bytearray(EXPLICIT_SIGNED_DICOM.read_bytes())
        position = data.find(b"\x20\x00\x0d\x00UI")
        assert position > 0
        data[position + 4 : position + 6] = b"U\x7f"
        with pytest.raises(ImageDecodeError, match="could not be read"):
            decode_image(bytes(data))
