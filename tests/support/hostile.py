"""Hostile and broken uploads, generated in code: each case says what the service must answer."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field

import cv2
import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from tests.support import synthetic


@dataclass(frozen=True)
class Case:
    """One upload and the answers that are correct for it.

    ``statuses`` are the acceptable status codes; ``detail`` must appear in the JSON ``detail``
    of a 4xx; ``label`` is the expected label of a 201; ``files`` are multipart parts
    ``(field, (name, data, content type))`` and ``body``/``content_type`` a raw body instead.
    """

    name: str
    endpoint: str
    statuses: tuple[int, ...]
    detail: str = ""
    label: str | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None


def png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


def dicom_bytes_of(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def modified_dicom(dicom: bytes, **attributes: object) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom))
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dicom_bytes_of(dataset)


def dicom_without_pixels(dicom: bytes) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom))
    del dataset.PixelData
    return dicom_bytes_of(dataset)


def dicom_with_compressed_garbage(dicom: bytes, syntax: pydicom.uid.UID) -> bytes:
    """A DICOM that declares a compressed transfer syntax and carries frames no codec can read."""
    dataset = pydicom.dcmread(io.BytesIO(dicom))
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + os.urandom(512)])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_rle(dicom: bytes) -> bytes:
    """A valid RLE Lossless (compressed) copy, which pydicom decodes without plugins."""
    dataset = pydicom.dcmread(io.BytesIO(dicom))
    dataset.compress(RLELossless)
    return dicom_bytes_of(dataset)


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((64, 64), level, np.uint8)) for level in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return header + b"\x08\x00\x00\x00\x00" + b"\x00" * 64


def zip_of(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def zip_bomb(megabytes: int = 200) -> bytes:
    """One entry of zeros that deflates about 1000:1."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.dcm", "w", force_zip64=True) as entry:
            block = bytes(1024 * 1024)
            for _ in range(megabytes):
                entry.write(block)
    return buffer.getvalue()


def slice_cases(png_bytes: bytes, jpeg_bytes: bytes, dicom: bytes, max_upload_bytes: int) -> list[Case]:
    """Every hostile or odd single-slice upload, for ``POST /api/v1/predictions``."""
    endpoint = "/api/v1/predictions"
    grey = cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    sixteen_bit = (grey.astype(np.uint16) * 257).astype(np.uint16)
    rgba = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
    rgba[:, :, 3] = 200
    rng = np.random.default_rng(7)

    def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> list:
        return [("file", (name, data, content_type))]

    cases = [
        Case("empty file", endpoint, (400,), "empty", files=upload("empty.png", b"")),
        Case(
            "random bytes named .png",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload("noise.png", rng.bytes(4096), "image/png"),
        ),
        Case(
            "random bytes named .jpg",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload("noise.jpg", rng.bytes(4096), "image/jpeg"),
        ),
        Case(
            "random bytes named .dcm",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload("noise.dcm", rng.bytes(4096), "application/dicom"),
        ),
        Case(
            "truncated PNG",
            endpoint,
            (400,),
            "PNG",
            files=upload("cut.png", png_bytes[: len(png_bytes) // 2]),
        ),
        Case(
            "truncated JPEG",
            endpoint,
            (400,),
            "truncated",
            files=upload("cut.jpg", jpeg_bytes[: len(jpeg_bytes) // 2]),
        ),
        Case("truncated DICOM", endpoint, (400,), "DICOM", files=upload("cut.dcm", dicom[: len(dicom) // 2])),
        Case(
            "DICOM header only (cut inside the header)",
            endpoint,
            (400,),
            "DICOM",
            files=upload("cut.dcm", dicom[:300]),
        ),
        Case(
            "PNG header claiming 50000 x 50000 pixels",
            endpoint,
            (400,),
            "50000 x 50000",
            files=upload("bomb.png", png_claiming(50_000, 50_000)),
        ),
        Case(
            "16-bit PNG of a CT slice",
            endpoint,
            (201,),
            label="in_scope",
            files=upload("16.png", png(sixteen_bit)),
        ),
        Case(
            "RGBA PNG of a CT slice", endpoint, (201,), label="in_scope", files=upload("rgba.png", png(rgba))
        ),
        Case(
            "animated GIF",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload("a.gif", animated_gif()),
        ),
        Case(
            "DICOM without pixel data",
            endpoint,
            (400,),
            "no pixel data",
            files=upload("nopixels.dcm", dicom_without_pixels(dicom)),
        ),
        Case(
            "DICOM of modality MR",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload("mr.dcm", modified_dicom(dicom, Modality="MR")),
        ),
        Case(
            "DICOM of modality CR",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload("cr.dcm", modified_dicom(dicom, Modality="CR")),
        ),
        Case(
            "DICOM, JPEG 2000 with undecodable frames",
            endpoint,
            (400, 415),
            "DICOM",
            files=upload("j2k.dcm", dicom_with_compressed_garbage(dicom, JPEG2000Lossless)),
        ),
        Case(
            "DICOM, JPEG baseline with undecodable frames",
            endpoint,
            (400, 415),
            "DICOM",
            files=upload("jpeg.dcm", dicom_with_compressed_garbage(dicom, JPEGBaseline8Bit)),
        ),
        Case(
            "DICOM, RLE Lossless (valid)",
            endpoint,
            (201,),
            label="in_scope",
            files=upload("rle.dcm", dicom_rle(dicom)),
        ),
        Case(
            "DICOM with RescaleSlope 1e12",
            endpoint,
            (400,),
            "RescaleSlope",
            files=upload("slope.dcm", modified_dicom(dicom, RescaleSlope="1e12")),
        ),
        Case(
            "DICOM with RescaleSlope 0",
            endpoint,
            (400,),
            "RescaleSlope",
            files=upload("slope0.dcm", modified_dicom(dicom, RescaleSlope="0")),
        ),
        Case(
            "multipart body over the size limit",
            endpoint,
            (413,),
            "limit",
            files=upload("big.png", b"\x89PNG\r\n\x1a\n" + bytes(max_upload_bytes + 1024)),
        ),
        Case(
            "JSON body instead of a form",
            endpoint,
            (422,),
            "file",
            body=b'{"file": "x"}',
            content_type="application/json",
        ),
        Case(
            "form-urlencoded body",
            endpoint,
            (422,),
            "file",
            body=b"file=abc",
            content_type="application/x-www-form-urlencoded",
        ),
        Case(
            "plain-text body", endpoint, (422,), "file", body=b"\x89PNG not really", content_type="text/plain"
        ),
        Case(
            "HTML page uploaded as an image",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload("x.png", b"<html><script>alert(1)</script></html>", "text/html"),
        ),
        Case(
            "SVG with script",
            endpoint,
            (415,),
            "not a PNG, JPEG or DICOM",
            files=upload(
                "x.svg",
                b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                "image/svg+xml",
            ),
        ),
        Case(
            "valid PNG sent as text/html",
            endpoint,
            (201,),
            label="in_scope",
            files=upload("slice.html", png_bytes, "text/html"),
        ),
        Case(
            "colour photograph",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload(
                "photo.jpg", cv2.imencode(".jpg", synthetic.colour_shapes())[1].tobytes(), "image/jpeg"
            ),
        ),
        Case(
            "chest radiograph-like image",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload("chest.png", png(synthetic.chest_radiograph())),
        ),
        Case(
            "blank image",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload("blank.png", png(synthetic.blank())),
        ),
        Case(
            "grey noise",
            endpoint,
            (201,),
            label="out_of_scope",
            files=upload("noise.png", png(synthetic.noise())),
        ),
    ]
    return cases


def study_cases(dicom: bytes, max_study_upload_bytes: int) -> list[Case]:
    """Hostile whole-study uploads, for ``POST /api/v1/studies``."""
    endpoint = "/api/v1/studies"
    rng = np.random.default_rng(11)

    def upload(*parts: tuple[str, bytes, str]) -> list:
        return [("files", part) for part in parts]

    zip_type = "application/zip"
    return [
        Case(
            "study: empty file",
            endpoint,
            (400, 422),
            "",
            files=upload(("empty.dcm", b"", "application/dicom")),
        ),
        Case(
            "study: random bytes",
            endpoint,
            (400, 415, 422),
            "",
            files=upload(
                ("a.dcm", rng.bytes(4096), "application/dicom"),
                ("b.dcm", rng.bytes(4096), "application/dicom"),
            ),
        ),
        Case(
            "study: ZIP bomb", endpoint, (400, 413, 422), "", files=upload(("bomb.zip", zip_bomb(), zip_type))
        ),
        Case(
            "study: ZIP with ../ and absolute paths",
            endpoint,
            (400, 422),
            "",
            files=upload(
                ("evil.zip", zip_of([("../../escape.dcm", dicom), ("/etc/evil.dcm", dicom)]), zip_type)
            ),
        ),
        Case(
            "study: ZIP with 5000 tiny entries",
            endpoint,
            (400, 413, 422),
            "",
            files=upload(
                ("many.zip", zip_of([(f"f{index:05d}.dcm", b"x") for index in range(5000)]), zip_type)
            ),
        ),
        Case(
            "study: truncated ZIP",
            endpoint,
            (400, 422),
            "",
            files=upload(("cut.zip", zip_of([("a.dcm", dicom)])[:200], zip_type)),
        ),
        Case(
            "study: DICOM without pixel data",
            endpoint,
            (400, 422),
            "",
            files=upload(("nopixels.dcm", dicom_without_pixels(dicom), "application/dicom")),
        ),
        Case(
            "study: body over the size limit",
            endpoint,
            (413,),
            "limit",
            files=upload(("big.zip", b"PK\x03\x04" + bytes(max_study_upload_bytes + 1024), zip_type)),
        ),
        Case("study: JSON body", endpoint, (422,), "files", body=b"{}", content_type="application/json"),
    ]
