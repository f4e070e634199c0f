"""Segmentation: metrics with known answers, mask geometry, volumes, the model and its loss."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.segmentation import (
    SUBTYPE_COLOURS,
    SUBTYPES,
    SegSample,
    load_seg_image,
    mask_to_input,
    preprocess_pair,
    read_bhsd,
    read_ct_ich_subtypes,
    volume_split,
)
from ml.evaluation.segmentation import (
    abc2_volume_ml,
    bootstrap_pooled,
    dice,
    iou,
    lesion_detection,
    pointing_game_hit,
    remove_small_components,
    voxel_volume_ml,
)
from ml.models.unet import build_unet
from ml.seg_training import mask_loss
from ml.segmenter import class_map_from_probabilities, class_map_to_original, contour_overlay


def _square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


# --- Dice, IoU and pooling -------------------------------------------------------------


def test_dice_and_iou_of_overlapping_squares() -> None:
    truth = _square((40, 40), 0, 0, 10)  # 100 pixels
    prediction = _square((40, 40), 5, 0, 10)  # 100 pixels, 50 shared
    assert dice(prediction, truth) == pytest.approx(2 * 50 / 200)
    assert iou(prediction, truth) == pytest.approx(50 / 150)


def test_dice_perfect_disjoint_and_empty() -> None:
    truth = _square((20, 20), 2, 2, 5)
    assert dice(truth, truth) == 1.0 and iou(truth, truth) == 1.0
    assert dice(_square((20, 20), 12, 12, 5), truth) == 0.0
    empty = np.zeros((20, 20), bool)
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))
    assert dice(empty, truth) == 0.0


def test_dice_rejects_different_shapes() -> None:
    with pytest.raises(ValueError, match="Shapes differ"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))


def test_pooled_dice_sums_counts_and_bootstraps_by_volume() -> None:
    # Two slices: (intersection, predicted, true) = (50, 100, 100) and (0, 0, 100).
    report = bootstrap_pooled([(50, 100, 100), (0, 0, 100)], ["a", "b"], num_resamples=200, seed=1)
    assert report["dice"]["value"] == pytest.approx(2 * 50 / 300, abs=1e-4)
    assert report["iou"]["value"] == pytest.approx(50 / 250, abs=1e-4)
    low, high = report["dice"]["ci95"]
    assert low is not None and high is not None
    assert low <= report["dice"]["value"] <= high
    # Resampling volumes gives 0 (only "b") and 0.5 (only "a") at the extremes.
    assert low == pytest.approx(0.0) and high == pytest.approx(0.5)
    assert report["slices"] == 2 and report["volumes"] == 2


# --- Components, lesions, pointing game -------------------------------------------------


def test_remove_small_components_keeps_large_ones() -> None:
    mask = _square((30, 30), 0, 0, 10) | _square((30, 30), 20, 20, 2)
    cleaned = remove_small_components(mask, 5)
    assert cleaned.sum() == 100 and not cleaned[20:22, 20:22].any()
    assert remove_small_components(mask, 0).sum() == mask.sum()


def test_lesion_detection_counts_found_and_false_components() -> None:
    truth = _square((50, 50), 0, 0, 10) | _square((50, 50), 30, 30, 10)
    prediction = _square((50, 50), 5, 5, 3) | _square((50, 50), 20, 0, 3)
    result = lesion_detection(prediction, truth)
    assert result == {"lesions": 2, "found": 1, "predicted_components": 2, "false_components": 1}


def test_pointing_game_hit_miss_and_tolerance() -> None:
    truth = _square((64, 64), 10, 10, 10)
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[15, 15] = 1.0
    assert pointing_game_hit(heatmap, truth)
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[23, 15] = 1.0  # three pixels below the region
    assert not pointing_game_hit(heatmap, truth)
    assert pointing_game_hit(heatmap, truth, tolerance_px=4)
    # A flat map has its maximum everywhere: not a hit.
    assert not pointing_game_hit(np.ones((64, 64), np.float32), truth)
    with pytest.raises(ValueError, match="non-empty"):
        pointing_game_hit(heatmap, np.zeros((64, 64), bool))


# --- Volumes ----------------------------------------------------------------------------


def _sphere_slices(radius_mm: float, pixel_mm: float, slice_mm: float) -> list[np.ndarray]:
    side = int(2 * radius_mm / pixel_mm) + 20
    centre = side / 2.0
    rows, cols = np.mgrid[0:side, 0:side]
    distance2 = ((rows + 0.5 - centre) * pixel_mm) ** 2 + ((cols + 0.5 - centre) * pixel_mm) ** 2
    count = int(math.ceil(2 * radius_mm / slice_mm)) + 2
    positions = (np.arange(count) - (count - 1) / 2.0) * slice_mm
    return [distance2 <= radius_mm**2 - z**2 for z in positions]


@pytest.mark.parametrize(("pixel_mm", "slice_mm"), [(0.5, 1.0), (0.45, 5.0)])
def test_voxel_volume_of_a_sphere_within_five_percent(pixel_mm: float, slice_mm: float) -> None:
    radius = 20.0
    masks = _sphere_slices(radius, pixel_mm, slice_mm)
    expected_ml = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    measured = voxel_volume_ml(masks, (pixel_mm, pixel_mm), slice_mm)
    assert measured == pytest.approx(expected_ml, rel=0.05)


def test_abc2_of_a_sphere_follows_the_weighted_slice_count() -> None:
    radius, pixel_mm, slice_mm = 20.0, 0.5, 5.0
    masks = _sphere_slices(radius, pixel_mm, slice_mm)
    result = abc2_volume_ml(masks, (pixel_mm, pixel_mm), slice_mm)
    assert result["a_mm"] == pytest.approx(2 * radius, abs=1.5)
    assert result["b_mm"] == pytest.approx(2 * radius, abs=1.5)
    # Slice centres at +-2.5, 7.5, 12.5, 17.5 mm hold 98%, 86%, 61% and 23% of the largest
    # area: weights 1, 1, 0.5 and 0 on each side, so C = 5 slices x 5 mm.
    assert result["c_mm"] == pytest.approx(25.0)
    expected = result["a_mm"] * result["b_mm"] * result["c_mm"] / 2.0 / 1000.0
    assert result["volume_ml"] == pytest.approx(expected, rel=0.01)  # A and B are rounded to 0.1 mm
    assert abc2_volume_ml([np.zeros((5, 5), bool)], (1.0, 1.0), 5.0)["volume_ml"] == 0.0


def test_abc2_of_a_box_of_equal_slices() -> None:
    # A 20 x 10 mm rectangle on 4 slices of 5 mm: A is its diagonal, B its width across it.
    mask = np.zeros((60, 60), bool)
    mask[10:30, 10:20] = True  # 20 x 10 pixels of 1 mm
    result = abc2_volume_ml([mask] * 4, (1.0, 1.0), 5.0)
    assert result["c_mm"] == pytest.approx(20.0)
    assert result["a_mm"] == pytest.approx(math.hypot(19, 9) + 1, abs=0.1)
    assert result["volume_ml"] > 0


def test_voxel_volume_respects_anisotropic_spacing() -> None:
    mask = np.ones((10, 10), bool)
    assert voxel_volume_ml([mask, mask], (0.5, 2.0), 3.0) == pytest.approx(200 * 3.0 / 1000.0)


# --- Geometry of masks --------------------------------------------------------------------


def _head_with_blob(shape: tuple[int, int], blob_centre: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse (a head) with a brighter round blob; the blob's mask (class 2)."""
    image = np.zeros(shape, np.uint8)
    height, width = shape
    cv2.ellipse(image, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 110, -1)
    cv2.circle(image, (blob_centre[1], blob_centre[0]), 6, 230, -1)
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, (blob_centre[1], blob_centre[0]), 6, 2, -1)
    return image, mask


def test_mask_follows_the_image_through_preprocessing(tmp_path: Path) -> None:
    # Non-square, off-centre content: the blob sits up and to the left.
    image, mask = _head_with_blob((200, 300), (80, 110))
    cv2.imwrite(str(tmp_path / "image.png"), image)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    sample = SegSample(tmp_path / "image.png", tmp_path / "mask.png", (0, 1, 0, 0, 0), "v", "test", True)
    pixels, input_mask, geometry = preprocess_pair(sample, PreprocessConfig(image_size=64))
    assert pixels.shape == input_mask.shape == (64, 64)
    assert set(np.unique(input_mask)) == {0, 2}
    # The mask lies on the brightest input pixels (the blob), upper left of the centre.
    rows, cols = np.nonzero(input_mask)
    assert rows.mean() < 32 and cols.mean() < 32
    assert pixels[input_mask == 2].mean() > pixels[(input_mask == 0) & (pixels > 0)].mean() + 40
    # And back onto the original grid it covers the original blob.
    back = class_map_to_original(input_mask, geometry)
    assert back.shape == (200, 300)
    assert iou(back == 2, mask == 2) > 0.6


def test_mask_to_input_keeps_class_indices() -> None:
    image, _ = _head_with_blob((120, 120), (60, 60))
    result = preprocess(image, PreprocessConfig(image_size=32))
    mask = np.zeros((120, 120), np.uint8)
    mask[50:70, 40:60] = 5
    mapped = mask_to_input(mask, result.geometry, 32)
    assert mapped.dtype == np.uint8 and set(np.unique(mapped)) <= {0, 5} and (mapped == 5).any()


def test_class_map_from_probabilities_thresholds_and_labels() -> None:
    probabilities = np.zeros((20, 20, 6), np.float32)
    probabilities[..., 0] = 1.0
    probabilities[2:8, 2:8] = [0.2, 0.0, 0.7, 0.1, 0.0, 0.0]  # blood 0.8, intraparenchymal
    probabilities[15, 15] = [0.1, 0.9, 0.0, 0.0, 0.0, 0.0]  # a one-pixel speck
    class_map = class_map_from_probabilities(probabilities, blood_threshold=0.5, min_component_px=2)
    assert (class_map[2:8, 2:8] == 2).all() and class_map[15, 15] == 0
    assert class_map.sum() == 36 * 2
    assert not class_map_from_probabilities(probabilities, 0.85, 0)[2:8, 2:8].any()


def test_contour_overlay_draws_each_subtype_in_its_colour() -> None:
    class_map = np.zeros((64, 64), np.uint8)
    class_map[10:30, 10:30] = 1
    class_map[40:60, 40:60] = 5
    overlay = contour_overlay(class_map)
    assert overlay.shape == (64, 64, 4)
    assert tuple(overlay[10, 20, :3]) == SUBTYPE_COLOURS[SUBTYPES[0]]
    assert tuple(overlay[40, 50, :3]) == SUBTYPE_COLOURS[SUBTYPES[4]]
    assert overlay[20, 20, 3] == 0 and overlay[0, 0, 3] == 0


# --- Model and loss -----------------------------------------------------------------------


def test_unet_outputs_mask_and_subtypes() -> None:
    model = build_unet((64, 64, 1), width=4)
    outputs = model(np.zeros((2, 64, 64, 1), np.float32))
    assert outputs["mask"].shape == (2, 64, 64, 6)
    assert outputs["subtypes"].shape == (2, 5)
    assert np.allclose(np.sum(outputs["mask"].numpy(), axis=-1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_unet((60, 60, 1))


def _target(one_hot: np.ndarray, valid: float) -> np.ndarray:
    return np.concatenate([one_hot, np.full(one_hot.shape[:-1] + (1,), valid, np.float32)], axis=-1)


def test_mask_loss_is_small_for_a_perfect_prediction_and_ignores_unknown_masks() -> None:
    truth = np.zeros((1, 16, 16), np.int32)
    truth[0, 4:10, 4:10] = 3
    one_hot = tf.one_hot(truth, 6).numpy()
    perfect = float(mask_loss(tf.constant(_target(one_hot, 1.0)), tf.constant(one_hot)))
    wrong = np.zeros_like(one_hot)
    wrong[..., 0] = 1.0
    bad = float(mask_loss(tf.constant(_target(one_hot, 1.0)), tf.constant(wrong * 0.99 + 0.01 / 6)))
    assert perfect < 0.01 < bad
    # Adding a slice whose mask is unknown (valid = 0) changes nothing, whatever is predicted.
    targets = np.concatenate([_target(one_hot, 1.0), _target(wrong, 0.0)], axis=0)
    predictions = np.concatenate([one_hot, np.full_like(one_hot, 1 / 6)], axis=0)
    assert float(mask_loss(tf.constant(targets), tf.constant(predictions))) == pytest.approx(
        perfect, abs=1e-4
    )


# --- The real data ------------------------------------------------------------------------


def test_read_bhsd_windows_hounsfield_pngs(data_dir: Path) -> None:
    samples = read_bhsd(data_dir)
    assert len(samples) == 52 and len({s.group for s in samples}) == 38
    assert all(s.any_blood and s.mask_known for s in samples)
    raw = cv2.imread(str(samples[0].path), cv2.IMREAD_UNCHANGED)
    windowed = load_seg_image(samples[0])
    # 0..80 HU spread over 0..255: 40 HU -> about 128; 80 HU and above -> 255.
    assert windowed.dtype == np.uint8
    assert np.all(windowed[raw >= 80] == 255) and np.all(windowed[raw == 0] == 0)
    at_40 = raw == 40
    if at_40.any():
        assert abs(int(windowed[at_40][0]) - 128) <= 1


def test_volume_split_keeps_volumes_apart_and_covers_subtypes(data_dir: Path) -> None:
    samples = read_bhsd(data_dir)
    parts = volume_split(samples, validation_volumes=5, test_volumes=10, seed=42)
    groups = {name: {s.group for s in members} for name, members in parts.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]
    assert len(groups["test"]) == 10 and len(groups["validation"]) == 5
    assert sum(len(m) for m in parts.values()) == len(samples)
    for part in ("train", "test"):
        assert all(any(s.subtypes[k] for s in parts[part]) for k in range(len(SUBTYPES)))
    again = volume_split(samples, 5, 10, seed=42)
    assert [s.path for s in again["test"]] == [s.path for s in parts["test"]]


def test_ct_ich_subtypes_match_the_any_label(data_dir: Path) -> None:
    samples = read_ct_ich_subtypes(data_dir)
    assert len(samples) == 1895
    positives = [s for s in samples if s.any_blood]
    assert len(positives) == 220
    # Normal slices have a known, empty mask; haemorrhage slices no mask.
    assert all(s.mask_known != bool(s.any_blood) for s in samples)


# --- Training and evaluation on a few real slices -------------------------------------------

CLASSIFIER_DIR = Path(__file__).resolve().parents[2] / "model_store" / "ich-compact" / "1.0.0"


def test_smoke_training_writes_a_bundle_that_evaluates(data_dir: Path, tmp_path: Path) -> None:
    import json

    from ml.evaluate_seg import evaluate_bundle, read_mask_csv
    from ml.seg_training import SegTrainConfig, train_segmentation

    config = SegTrainConfig(
        classifier_dir=str(CLASSIFIER_DIR),
        width=4,
        batch_size=4,
        steps_per_epoch=1,
        epochs=1,
        max_ct_ich=80,
        bootstrap_resamples=20,
    )
    output = tmp_path / "bundle"
    card = train_segmentation(config, data_dir, output, tmp_path / "cache")
    assert (output / "model.keras").is_file() and (output / "split_manifest.json").is_file()
    written = json.loads((output / "model_card.json").read_text())
    assert written["kind"] == "segmentation" and written["subtypes"] == list(SUBTYPES)
    test = card["metrics"]["test"]
    assert set(test["segmentation"]) >= {"any_blood", *SUBTYPES, "lesion_detection"}
    assert test["segmentation"]["any_blood"]["slices"] == len(
        [s for s in read_bhsd(data_dir) if s.group in set(written_volumes(output)["test"])]
    )
    assert 0.0 <= test["normal_ct_ich_slices"]["clear_fraction"] <= 1.0
    assert card["pointing_game"]["all_bhsd_seg_slices"]["slices"] == 52
    assert card["blood_threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

    # The generic CSV path: three bhsd_seg slices described by its own labels file.
    samples = read_mask_csv(data_dir / "bhsd_seg" / "labels.csv", group_col="volume", hounsfield_png=True)[:3]
    report = evaluate_bundle(output, data_dir, samples, resamples=20)
    assert report["segmentation"]["any_blood"]["slices"] == 3
    assert report["model"] == {"name": written["name"], "version": written["version"]}


def written_volumes(bundle: Path) -> dict[str, list[str]]:
    import json

    volumes: dict[str, list[str]] = json.loads((bundle / "split_manifest.json").read_text())[
        "bhsd_seg_volumes"
    ]
    return volumes
