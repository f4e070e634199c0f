"""Training, evaluation and the service turn the same file into the same model input.

Three readers decode image files: training's :func:`ml.data.datasets.load_image` (OpenCV, depth and
channels as stored), ``ml.evaluate``'s reader and the service's :func:`app.services.inference.decode_upload`
(both :func:`ml.data.imaging.decode_image`: 2-D uint8, DICOM in the brain window). Each image then
goes through :func:`ml.data.preprocessing.preprocess`. Training keeps its own reader because the
shipped models were trained on what it gives: on a colour PNG the two conversions to grey differ (see
:func:`test_training_reads_a_grey_rgb_png_as_the_service_does_up_to_rounding`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.services.inference import decode_upload
from ml.data.datasets import load_image
from ml.data.imaging import DEFAULT_MAX_PIXELS
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.windowing import BRAIN_WINDOW
from ml.errors import DataError
from ml.evaluate import _read_pixels as evaluation_reader

FILES = {
    "png": Path("head_ct", "images", "000.png"),
    "jpeg": Path("ct_ich", "Patients_CT", "050", "brain", "1.jpg"),
    "dicom": Path("rsna_dicom", "dicom", "ID_0000aee4b.dcm"),
}
# The input sizes of the shipped classifiers (224 and 288 px) and of the tests' tiny model.
CONFIGS = [PreprocessConfig(image_size=size) for size in (224, 288, 64)]


def model_input(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    return preprocess(pixels, config).image


def service_pixels(path: Path) -> np.ndarray:
    return decode_upload(path.read_bytes(), DEFAULT_MAX_PIXELS).pixels


@pytest.mark.parametrize("kind", sorted(FILES))
def test_evaluation_reads_every_format_as_the_service_does(data_dir: Path, kind: str) -> None:
    path = data_dir / FILES[kind]
    evaluation, service = evaluation_reader(path), service_pixels(path)
    assert np.array_equal(evaluation, service)
    for config in CONFIGS:
        assert np.array_equal(model_input(evaluation, config), model_input(service, config))


def test_training_reads_a_greyscale_jpeg_as_the_service_does(data_dir: Path) -> None:
    path = data_dir / FILES["jpeg"]
    training, service = load_image(path), service_pixels(path)
    assert training.shape == service.shape and training.dtype == np.uint8
    assert np.array_equal(training, service)
    for config in CONFIGS:
        assert np.array_equal(model_input(training, config), model_input(service, config))


def test_training_reads_a_grey_rgb_png_as_the_service_does_up_to_rounding(data_dir: Path) -> None:
    path = data_dir / FILES["png"]
    training, service = load_image(path), service_pixels(path)
    # head_ct stores grey slices as RGB: training keeps the three channels and preprocess
    # weights them in float32 (weights summing to 1 within a rounding error); the service
    # converts with OpenCV to uint8 grey. Equal channels give the same grey either way.
    assert training.shape == (*service.shape, 3)
    assert all(np.array_equal(training[:, :, channel], service) for channel in range(3))
    for config in CONFIGS:
        from_training, from_service = model_input(training, config), model_input(service, config)
        np.testing.assert_allclose(from_training, from_service, rtol=0, atol=1e-6)
        # Training stores its inputs as uint8 grey levels; there the two are the same.
        assert np.array_equal(np.round(from_training * 255.0), np.round(from_service * 255.0))


def test_dicom_is_windowed_by_the_service_and_not_read_by_training(data_dir: Path) -> None:
    path = data_dir / FILES["dicom"]
    decoded = decode_upload(path.read_bytes(), DEFAULT_MAX_PIXELS)
    assert decoded.hounsfield is not None
    assert np.array_equal(decoded.pixels, BRAIN_WINDOW.apply_uint8(decoded.hounsfield))
    # The training collections are PNG and JPEG; training's reader refuses DICOM rather than
    # reading it without the window.
    with pytest.raises(DataError, match="Could not decode image"):
        load_image(path)
