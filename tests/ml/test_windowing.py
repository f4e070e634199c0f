"""Display windows on Hounsfield units."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data.windowing import BONE_WINDOW, BRAIN_WINDOW, SUBDURAL_WINDOW, Window


def test_window_bounds() -> None:
    assert BRAIN_WINDOW.lower == 0.0
    assert BRAIN_WINDOW.upper == 80.0
    assert SUBDURAL_WINDOW.lower == -20.0
    assert SUBDURAL_WINDOW.upper == 180.0
    assert BONE_WINDOW.lower == -800.0
    assert BONE_WINDOW.upper == 2000.0


def test_apply_maps_known_hounsfield_values() -> None:
    hounsfield = np.array([-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 3000.0])

    windowed = BRAIN_WINDOW.apply(hounsfield)

    assert windowed.dtype == np.float32
    np.testing.assert_allclose(windowed, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)


def test_apply_accepts_integer_arrays_and_keeps_shape() -> None:
    hounsfield = np.array([[-1024, 0], [40, 1000]], dtype=np.int16)

    windowed = Window(center=40.0, width=80.0).apply(hounsfield)

    assert windowed.shape == (2, 2)
    np.testing.assert_allclose(windowed, [[0.0, 0.0], [0.5, 1.0]], atol=1e-6)


def test_apply_uint8_maps_known_values() -> None:
    hounsfield = np.array([-50.0, 0.0, 40.0, 80.0, 500.0])

    grey_levels = BRAIN_WINDOW.apply_uint8(hounsfield)

    assert grey_levels.dtype == np.uint8
    # 40 HU sits at 0.5 of the window: 127.5 rounds to the even 128.
    np.testing.assert_array_equal(grey_levels, [0, 0, 128, 255, 255])


def test_wider_window_compresses_contrast() -> None:
    hounsfield = np.array([30.0, 50.0])

    narrow = BRAIN_WINDOW.apply(hounsfield)
    wide = SUBDURAL_WINDOW.apply(hounsfield)

    assert narrow[1] - narrow[0] == pytest.approx(20.0 / 80.0)
    assert wide[1] - wide[0] == pytest.approx(20.0 / 200.0)


@pytest.mark.parametrize("width", [0.0, -10.0])
def test_non_positive_width_is_rejected(width: float) -> None:
    with pytest.raises(ValueError, match="width must be positive"):
        Window(center=40.0, width=width)
