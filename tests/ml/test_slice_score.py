"""Slice scores from the heads of a multitask network."""

from __future__ import annotations

import numpy as np
import pytest

from ml.slice_score import OUTLINE_PEAK_PIXELS, SLICE_SCORES, outline_peak, slice_score


def _blood(values: dict[tuple[int, int], float], size: int = 16) -> np.ndarray:
    blood = np.zeros((size, size), np.float32)
    for (row, column), value in values.items():
        blood[row, column] = value
    return blood


def test_one_bright_pixel_counts_less_than_an_outlined_region() -> None:
    speck = _blood({(3, 3): 1.0})
    region = np.zeros((16, 16), np.float32)
    region[4:8, 4:8] = 0.9
    peaks = outline_peak(np.stack([speck, region]))
    assert peaks[0] == pytest.approx(1.0 / OUTLINE_PEAK_PIXELS)
    assert peaks[1] == pytest.approx(0.9)


def test_each_score_combines_the_heads_it_names() -> None:
    probability = np.array([0.2, 0.8])
    subtypes = np.array([[0.1, 0.6, 0.0, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0]])
    region = np.zeros((16, 16), np.float32)
    region[0:4, 0:4] = 0.5
    blood = np.stack([region, np.zeros((16, 16), np.float32)])
    np.testing.assert_allclose(slice_score("probability", probability, subtypes, blood), [0.2, 0.8])
    np.testing.assert_allclose(slice_score("outline_peak", probability, subtypes, blood), [0.5, 0.0])
    np.testing.assert_allclose(slice_score("probability_outline", probability, subtypes, blood), [0.35, 0.4])
    np.testing.assert_allclose(slice_score("probability_subtypes", probability, subtypes, blood), [0.4, 0.85])
    np.testing.assert_allclose(
        slice_score("all_heads", probability, subtypes, blood), [(0.2 + 0.5 + 0.6) / 3, (0.8 + 0.0 + 0.9) / 3]
    )
    for method in SLICE_SCORES:
        values = slice_score(method, probability, subtypes, blood)
        assert values.shape == (2,) and np.all((values >= 0.0) & (values <= 1.0)), method


def test_an_unknown_score_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown slice score 'median'"):
        slice_score("median", np.zeros(1), np.zeros((1, 5)), np.zeros((1, 4, 4)))
