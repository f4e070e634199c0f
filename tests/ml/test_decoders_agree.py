"""Training, evaluation and the service turn the same file into the same pixels and model input.

Every reader of slices goes through :func:`ml.data.imaging.decode_image` (2-D uint8 grey, DICOM in
the brain window): training's :func:`ml.data.datasets.load_image` (behind
:func:`ml.training.preprocess_samples` and the segmentation readers), ``ml.evaluate``'s reader and
the service's :func:`app.services.imaging.decode_upload`. Each file below goes through all of
them, and the arrays must be the same to the bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.services.imaging import decode_upload
from ml.data.datasets import Sample, load_image, load_raw_image
from ml.data.imaging import DEFAULT_MAX_PIXELS
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.segmentation import SegSample, load_seg_image
from ml.data.windowing import BRAIN_WINDOW
from ml.evaluate import _read_pixels as evaluation_reader
from ml.training import preprocess_samples

FILES = {
    # head_ct stores grey slices as RGB (some as RGBA), and a few of them not quite grey.
    "png": Path("head_ct", "images", "000.png"),
    "rgba_png": Path("head_ct", "images", "195.png"),
    "colour_png": Path("head_ct", "images", "167.png"),
    "jpeg": Path("ct_ich", "Patients_CT", "050", "brain", "1.jpg"),
    "grey_png": Path("phe_sich", "images", "0004_00.png"),
    "dicom": Path("rsna_dicom", "dicom", "ID_0000aee4b.dcm"),
}
# The input sizes of the shipped classifiers (224 and 288 px) and of the tests' tiny model.
CONFIGS = [PreprocessConfig(image_size=size) for size in (224, 288, 64)]


def service_pixels(path: Path) -> np.ndarray:
    return decode_upload(path.read_bytes(), DEFAULT_MAX_PIXELS).pixels


def training_input(path: Path, config: PreprocessConfig) -> np.ndarray:
    """What the classifier's training loop is fed for this file (uint8, ``S x S x 1``)."""
    sample = Sample(path=path, label=0, group="patient", dataset="test")
    return preprocess_samples([sample], config)[0]


def stored_input(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The same preprocessing on already decoded pixels, stored as training stores it."""
    return np.round(preprocess(pixels, config).image * 255.0).astype(np.uint8)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_reader_gives_the_services_pixels(data_dir: Path, kind: str) -> None:
    path = data_dir / FILES[kind]
    service = service_pixels(path)
    assert service.dtype == np.uint8 and service.ndim == 2
    segmentation = load_seg_image(
        SegSample(path=path, mask_path=None, subtypes=(0,) * 5, group="g", dataset="test", mask_known=False)
    )
    for pixels in (load_image(path), evaluation_reader(path), segmentation):
        assert pixels.dtype == np.uint8
        assert np.array_equal(pixels, service)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_training_feeds_the_model_what_the_service_feeds_it(data_dir: Path, kind: str) -> None:
    path = data_dir / FILES[kind]
    service = service_pixels(path)
    for config in CONFIGS:
        assert np.array_equal(training_input(path, config), stored_input(service, config))
        assert np.array_equal(
            preprocess(evaluation_reader(path), config).image, preprocess(service, config).image
        )


def test_a_colour_png_is_read_as_the_services_grey(data_dir: Path) -> None:
    path = data_dir / FILES["colour_png"]
    stored = load_raw_image(path)
    # This head_ct slice is not grey: its channels differ, so the conversion to grey matters.
    assert stored.ndim == 3 and not np.array_equal(stored[..., 0], stored[..., 2])
    assert np.array_equal(load_image(path), service_pixels(path))


def test_dicom_is_read_in_the_brain_window_everywhere(data_dir: Path) -> None:
    path = data_dir / FILES["dicom"]
    decoded = decode_upload(path.read_bytes(), DEFAULT_MAX_PIXELS)
    assert decoded.hounsfield is not None
    windowed = BRAIN_WINDOW.apply_uint8(decoded.hounsfield)
    assert np.array_equal(decoded.pixels, windowed)
    assert np.array_equal(load_image(path), windowed)
