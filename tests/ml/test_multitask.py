"""The three-headed network, its losses (each only where its label exists) and its batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.explain.gradcam import GradCam
from ml.models.multitask import GRADCAM_LAYER, build_multitask, transfer_weights
from ml.models.unet import SEGMENTATION_CLASSES
from ml.multitask import (
    FLAG_BOX,
    FLAG_VALID,
    MultitaskConfig,
    Part,
    Predictor,
    mask_loss,
    probability_loss,
    subtype_loss,
    training_data,
)
from ml.multitask_data import _prepare, _Slice

SIZE = 32


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(11)
    return build_multitask((SIZE, SIZE, 1), width=4)


def test_one_pass_gives_probability_subtypes_and_mask(model) -> None:  # type: ignore[no-untyped-def]
    outputs = model(np.zeros((2, SIZE, SIZE, 1), np.float32))
    assert outputs["probability"].shape == (2, 1)
    assert outputs["subtypes"].shape == (2, 5)
    assert outputs["mask"].shape == (2, SIZE, SIZE, SEGMENTATION_CLASSES)
    assert np.allclose(outputs["mask"].numpy().sum(axis=-1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_multitask((40, 40, 1))


def test_the_served_size_stays_small() -> None:
    network = build_multitask((256, 256, 1), width=16)
    assert network.count_params() * 4 / 2**20 < 3.0
    compact = build_multitask((288, 288, 1), width=32, backbone="compact")
    assert compact.count_params() * 4 / 2**20 < 3.0


def test_the_compact_network_answers_like_the_classifier_it_starts_from() -> None:
    import keras

    from ml.models.classifier import build_classifier

    keras.utils.set_random_seed(3)
    classifier = build_classifier((SIZE, SIZE, 1), backbone="compact", width=4)
    network = build_multitask((SIZE, SIZE, 1), width=4, backbone="compact")
    copied = transfer_weights(classifier, network)
    assert {"stem_conv", "block4_conv2", "block4_bn2", "logit"} <= set(copied)
    images = np.random.default_rng(1).random((4, SIZE, SIZE, 1)).astype(np.float32)
    outputs = network(images, training=False)
    assert np.allclose(outputs["probability"].numpy(), classifier(images, training=False).numpy(), atol=1e-5)
    assert outputs["mask"].shape == (4, SIZE, SIZE, SEGMENTATION_CLASSES)
    assert outputs["subtypes"].shape == (4, 5)
    _, heatmaps = GradCam(network, GRADCAM_LAYER)(images)
    assert heatmaps.shape == (4, SIZE // 16, SIZE // 16)
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_multitask((SIZE, SIZE, 1), backbone="resnet")


def test_grad_cam_explains_the_probability_head(model) -> None:  # type: ignore[no-untyped-def]
    images = np.random.default_rng(0).random((3, SIZE, SIZE, 1)).astype(np.float32)
    probabilities, heatmaps = GradCam(model, GRADCAM_LAYER)(images)
    direct = model(images, training=False)["probability"].numpy().ravel()
    assert np.allclose(probabilities, direct, atol=1e-5)
    assert heatmaps.shape == (3, SIZE // 16, SIZE // 16)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_probability_loss_counts_only_weighted_slices() -> None:
    predictions = tf.constant([[0.9], [0.9]])
    weighted = probability_loss(tf.constant([[0.0, 1.0], [0.0, 0.0]]), predictions).numpy()
    assert weighted[0] == pytest.approx(-np.log(0.1), rel=1e-4)
    assert weighted[1] == 0.0


def test_subtype_loss_ignores_unknown_subtypes() -> None:
    labels = np.zeros((1, 10), np.float32)
    labels[0, 1] = 1.0  # intraparenchymal present
    labels[0, 5 + 1] = 1.0  # and only it is known
    good = np.full((1, 5), 0.01, np.float32)
    good[0, 1] = 0.99
    unknown_wrong = good.copy()
    unknown_wrong[0, 3] = 0.99
    assert subtype_loss(tf.constant(labels), tf.constant(good)).numpy()[0] == pytest.approx(
        subtype_loss(tf.constant(labels), tf.constant(unknown_wrong)).numpy()[0]
    )
    wrong = good.copy()
    wrong[0, 1] = 0.01
    assert subtype_loss(tf.constant(labels), tf.constant(wrong)).numpy()[0] > 0.5


def _mask_target(classes: np.ndarray, valid: np.ndarray, box: np.ndarray) -> tf.Tensor:
    one_hot = np.eye(SEGMENTATION_CLASSES, dtype=np.float32)[classes]
    return tf.constant(np.concatenate([one_hot, valid[..., None], box[..., None]], axis=-1)[None])


def _prediction(blood: np.ndarray) -> tf.Tensor:
    probabilities = np.zeros((*blood.shape, SEGMENTATION_CLASSES), np.float32)
    probabilities[..., 0] = 1.0 - blood
    probabilities[..., 2] = blood
    return tf.constant(probabilities[None])


def test_mask_loss_learns_blood_inside_the_box_and_none_outside() -> None:
    classes = np.zeros((8, 8), np.int64)
    box = np.zeros((8, 8), np.float32)
    box[2:5, 2:5] = 1.0
    valid = 1.0 - box  # outside the box: known background; inside: only "some blood"
    target = _mask_target(classes, valid, box)
    nothing = np.full((8, 8), 0.01, np.float32)
    inside = nothing.copy()
    inside[3, 3] = 0.95
    outside = nothing.copy()
    outside[6, 6] = 0.95
    loss_nothing = float(mask_loss(target, _prediction(nothing)))
    loss_inside = float(mask_loss(target, _prediction(inside)))
    loss_outside = float(mask_loss(target, _prediction(outside)))
    assert loss_inside < loss_nothing
    assert loss_inside < loss_outside


def test_mask_loss_ignores_pixels_that_are_not_known() -> None:
    classes = np.zeros((8, 8), np.int64)
    target = _mask_target(classes, np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))
    blood = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    assert float(mask_loss(target, _prediction(blood))) == pytest.approx(0.0, abs=1e-5)


def _synthetic_slices(count: int, label: int, pixels: str) -> list[_Slice]:
    rng = np.random.default_rng(label)

    def load() -> np.ndarray:
        image = np.zeros((100, 120), np.uint8)
        yy, xx = np.mgrid[:100, :120]
        image[((yy - 50) / 40) ** 2 + ((xx - 60) / 50) ** 2 < 1] = 120 + rng.integers(0, 20)
        return image

    return [
        _Slice(
            sample_id=f"s:{label}-{index}",
            group=f"p{label}-{index % 3}",
            load=load,
            label=label,
            label_weight=1.0,
            subtypes=(0, label, 0, 0, 0),
            subtype_weights=(1.0,) * 5,
            pixels=pixels,
            box=(40, 30, 79, 59) if pixels == "box" else None,
        )
        for index in range(count)
    ]


def test_a_box_lands_on_the_model_grid_where_the_head_crop_puts_it() -> None:
    from ml.data.preprocessing import PreprocessConfig

    part = _prepare("phe_sich", _synthetic_slices(2, 1, "box"), PreprocessConfig(image_size=SIZE))
    flags = part.flags[0]
    inside = (flags & FLAG_BOX) > 0
    assert 0.05 < inside.mean() < 0.5
    # Outside the box the slice is known to be blood-free; inside only "some blood" is known.
    assert np.all((flags[~inside] & FLAG_VALID) > 0)
    assert not np.any((flags[inside] & FLAG_VALID) > 0)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    assert abs((rows[0] + rows[-1]) / 2 - SIZE / 2) < SIZE * 0.15
    assert abs((cols[0] + cols[-1]) / 2 - SIZE / 2) < SIZE * 0.15


def test_batches_hold_both_labels_of_each_collection_in_equal_shares() -> None:
    from ml.data.preprocessing import PreprocessConfig

    config = PreprocessConfig(image_size=SIZE)
    parts: dict[str, Part] = {
        "ct_ich": _prepare(
            "ct_ich", _synthetic_slices(30, 0, "empty") + _synthetic_slices(3, 1, "somewhere"), config
        ),
        "phe_sich": _prepare(
            "phe_sich", _synthetic_slices(5, 0, "empty") + _synthetic_slices(20, 1, "box"), config
        ),
    }
    settings = MultitaskConfig(image_size=SIZE, batch_size=64, shares={"ct_ich": 0.5, "phe_sich": 0.5})
    batches = training_data(parts, settings, Augmenter(AugmentationConfig(), seed=3))
    images, targets = next(iter(batches))
    assert images.shape == (64, SIZE, SIZE, 1)
    assert targets["mask"].shape == (64, SIZE, SIZE, SEGMENTATION_CLASSES + 2)
    labels = targets["probability"].numpy()[:, 0]
    # Each (collection, label) cell is a quarter of the draws, whatever its size.
    assert 0.3 < labels.mean() < 0.7
    boxes = targets["mask"].numpy()[..., -1].reshape(64, -1).max(axis=1)
    assert np.all(boxes[labels == 1] == 1.0)
    assert np.all(boxes[labels == 0] == 0.0)


def test_batch_shares_are_read_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from ml.train_multitask import parse_args

    args = parse_args(["--output", "run", "--shares", "ct_ich=0.5", "phe_sich=0.5"])
    assert args.shares == {"ct_ich": 0.5, "phe_sich": 0.5}
    assert parse_args(["--output", "run"]).shares == MultitaskConfig().shares
    for wrong in (["brain=1"], ["ct_ich"], ["ct_ich=half"]):
        with pytest.raises(SystemExit) as raised:
            parse_args(["--output", "run", "--shares", *wrong])
        assert raised.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_frozen_encoder_keeps_the_classifier_while_the_decoder_learns() -> None:
    import keras

    from ml.multitask import freeze_layers

    keras.utils.set_random_seed(5)
    network = build_multitask((SIZE, SIZE, 1), width=4, backbone="compact")
    frozen = set(freeze_layers(network, "encoder"))
    assert {"stem_conv", "block4_bn2", "logit"} <= frozen
    assert not any(name.startswith(("dec", "mask_logits", "subtype_logits")) for name in frozen)
    before = {
        name: [w.copy() for w in network.get_layer(name).get_weights()] for name in ("logit", "mask_logits")
    }
    network.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"mask": "categorical_crossentropy"})
    images = np.random.default_rng(2).random((4, SIZE, SIZE, 1)).astype(np.float32)
    masks = np.zeros((4, SIZE, SIZE, SEGMENTATION_CLASSES), np.float32)
    masks[..., 0] = 1.0
    network.fit(images, {"mask": masks}, epochs=2, verbose=0)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(before["logit"], network.get_layer("logit").get_weights(), strict=True)
    )
    assert not np.array_equal(before["mask_logits"][0], network.get_layer("mask_logits").get_weights()[0])

    assert freeze_layers(network, "none") == []
    assert all(layer.trainable for layer in network.layers)

    unet = build_multitask((SIZE, SIZE, 1), width=4)
    frozen_bn = freeze_layers(unet, "batchnorm")
    assert frozen_bn and all(
        isinstance(unet.get_layer(n), keras.layers.BatchNormalization) for n in frozen_bn
    )
    with pytest.raises(ValueError, match="freeze must be one of"):
        freeze_layers(unet, "everything")


def _part(dataset: str, count: int, labels: list[int], rng: np.random.Generator) -> Part:
    masks = np.zeros((count, SIZE, SIZE), np.uint8)
    flags = np.full((count, SIZE, SIZE), FLAG_VALID, np.uint8)
    for index, label in enumerate(labels):
        if label:
            masks[index, 8:16, 8:16] = 1
            flags[index, 6:18, 6:18] |= FLAG_BOX
    return Part(
        dataset=dataset,
        ids=[f"{dataset}-{i}" for i in range(count)],
        groups=[f"{dataset}-p{i // 2}" for i in range(count)],
        images=(rng.random((count, SIZE, SIZE)) * 255).astype(np.uint8),
        masks=masks,
        flags=flags,
        labels=np.array(labels, np.float32),
        label_weights=np.ones(count, np.float32),
        subtypes=np.zeros((count, 5), np.float32),
        subtype_weights=np.zeros((count, 5), np.float32),
    )


def test_the_bundle_measures_slices_studies_outlines_and_where_the_heat_map_points() -> None:
    import keras

    from ml.multitask_bundle import held_out_metrics

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    network = build_multitask((SIZE, SIZE, 1), width=4, backbone="compact")
    labels = [0, 1, 0, 1, 1, 0, 0, 1]
    parts = {
        name: _part(name, len(labels), labels, rng) for name in ("ct_ich", "head_ct", "phe_sich", "bhsd_seg")
    }
    measured = held_out_metrics(Predictor(network), parts, 0.5, "max", 0.5, 0.5, 0)
    assert set(measured) == {"slices", "studies", "outlines", "pointing_game"}
    assert measured["slices"]["ct_ich"]["n"] == len(labels)
    assert measured["studies"]["ct_ich"]["patients"] == 4
    assert measured["outlines"]["normal_ct_ich_slices"] == labels.count(0)
    for name in ("bhsd_seg", "phe_sich"):
        pointing = measured["pointing_game"][name]
        assert pointing["slices"] == sum(labels)
        assert 0.0 <= pointing["hit_rate"] <= 1.0


def test_the_study_rule_with_outlines_is_chosen_only_when_it_clears_more_normal_patients() -> None:
    from ml.multitask_bundle import OUTLINE_AGGREGATION, choose_study_rules, study_metrics

    # Six patients; p1 bleeds with low probabilities but a large outline.
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.20, 0.80, 0.70, 0.40, 0.45, 0.60])
    volumes = np.array([900.0, 1500.0, 300.0, 100.0, 0.0, 250.0])
    by_method = {
        method: {"labels": labels, "probabilities": scores} for method in ("max", OUTLINE_AGGREGATION)
    }
    sources = np.array(["phe_sich", "ct_ich", "ct_ich", "ct_ich", "ct_ich", "ct_ich"])
    without = choose_study_rules({"by_method": by_method, "sources": sources})
    assert "outline_candidate" not in without and without["chosen"]["ct_ich_normal_cleared"] == 0
    rules = choose_study_rules({"by_method": by_method, "sources": sources, "outline_px": volumes})
    chosen = rules["chosen"]
    assert chosen["aggregation"] == OUTLINE_AGGREGATION and chosen["ct_ich_normal_cleared"] == 3
    series = {"by_method": by_method, "sources": sources, "outline_px": volumes}
    report = study_metrics(series, OUTLINE_AGGREGATION, chosen["threshold"], chosen["outline_px"])
    assert report["all"]["sensitivity"]["count"] == "3/3"
    assert report["ct_ich"]["specificity"]["count"] == "3/3"
    # The probability alone at the same threshold misses the small bleed.
    alone = study_metrics(series, OUTLINE_AGGREGATION, chosen["threshold"])
    assert alone["phe_sich"]["sensitivity"]["count"] == "0/1"
    # Not enough gain: one normal patient more is not worth a second criterion.
    few = {
        "by_method": by_method,
        "sources": np.array(["phe_sich", "ct_ich", "ct_ich", "ct_ich", "phe_sich", "phe_sich"]),
        "outline_px": volumes,
    }
    assert "outline_px" not in choose_study_rules(few)["chosen"]


def test_the_classifier_tools_read_the_slice_head_of_a_multitask_network(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    from ml.data.datasets import Sample
    from ml.data.preprocessing import PreprocessConfig
    from ml.evaluation.robustness import PERTURBATIONS, robustness_report
    from ml.model_io import predict_probabilities

    images = (np.random.default_rng(3).random((3, SIZE, SIZE)) * 255).astype(np.uint8)
    direct = (
        model(images[..., np.newaxis].astype(np.float32) / 255.0, training=False)["probability"]
        .numpy()
        .ravel()
    )
    assert np.allclose(predict_probabilities(model, images[..., np.newaxis]), direct, atol=1e-5)
    # The perturbation check takes the network as it is, like a classifier.
    samples = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        head = np.zeros((96, 96), np.uint8)
        cv2.circle(head, (48, 48), 36, 120 + 40 * index, -1)
        cv2.imwrite(str(path), head)
        samples.append(Sample(path=path, label=index % 2, group=f"p{index}", dataset="head_ct"))
    report = robustness_report(model, samples, PreprocessConfig(image_size=SIZE), 0.5)
    assert set(report) == {"n", *PERTURBATIONS} and report["n"] == 3
    assert all(0.0 <= report[name]["mean_abs_change"] <= 1.0 for name in PERTURBATIONS)


def test_the_card_warns_where_the_test_figures_call_for_it() -> None:
    from ml.multitask_bundle import measured_limitations

    measured = {
        "pointing_game": {
            "bhsd_seg": {"slices": 15, "hit_rate": 1 / 15},
            "phe_sich": {"slices": 74, "hit_rate": 0.91},
        }
    }
    robustness = {
        "n": 313,
        "rotate_90": {"mean_abs_change": 0.114, "flip_rate": 0.16},
        "corner_text": {"mean_abs_change": 0.001, "flip_rate": 0.0},
    }
    lines = measured_limitations(measured, robustness)
    assert len(lines) == 2
    assert "7% of held-out bhsd_seg slices (15 slices)" in lines[0] and "Use the outline" in lines[0]
    assert (
        lines[1].startswith("A quarter turn moves the probability by 0.11") and "16% of decisions" in lines[1]
    )


def test_a_run_and_its_continuation_learn_what_they_are_told(data_dir: Path, tmp_path: Path) -> None:
    import json

    import keras

    from ml.models.classifier import build_classifier
    from ml.multitask import train_multitask

    keras.utils.set_random_seed(13)
    classifier_path = tmp_path / "classifier.keras"
    build_classifier((SIZE, SIZE, 1), backbone="compact", width=4).save(classifier_path)
    common = {
        "image_size": SIZE,
        "width": 4,
        "batch_size": 4,
        "steps_per_epoch": 2,
        "epochs": 1,
        "collections": ("head_ct", "bhsd_seg"),
        "shares": {"head_ct": 0.5, "bhsd_seg": 0.5},
        "backbone": "compact",
    }
    first = train_multitask(
        MultitaskConfig(**common, encoder_from=str(classifier_path), freeze="encoder"),
        data_dir,
        tmp_path / "a",
        tmp_path / "cache",
    )
    assert first["epochs_run"] == 1 and first["counts"]["test"]["bhsd_seg"] > 0
    manifest = json.loads((tmp_path / "a" / "split_manifest.json").read_text())
    assert not set(manifest["train"]["patients"]) & set(manifest["test"]["patients"])
    saved = keras.models.load_model(tmp_path / "a" / "model.keras", compile=False)
    before = saved.get_layer("stem_conv").get_weights()[0]
    assert np.array_equal(
        before, keras.models.load_model(classifier_path).get_layer("stem_conv").get_weights()[0]
    )

    # The continuation lets the encoder learn although the saved network had it frozen.
    train_multitask(
        MultitaskConfig(**common, init_from=str(tmp_path / "a" / "model.keras"), freeze="batchnorm"),
        data_dir,
        tmp_path / "b",
        tmp_path / "cache",
    )
    after = keras.models.load_model(tmp_path / "b" / "last.keras", compile=False)
    assert not np.array_equal(before, after.get_layer("stem_conv").get_weights()[0])
    assert np.array_equal(
        saved.get_layer("stem_bn").get_weights()[0], after.get_layer("stem_bn").get_weights()[0]
    )


def test_test_time_augmentation_is_measured_per_collection_and_scheme() -> None:
    import keras

    from ml.evaluate_tta import SCHEMES, tta_report
    from ml.evaluation.metrics import binary_metrics

    keras.utils.set_random_seed(17)
    network = build_multitask((SIZE, SIZE, 1), width=4, backbone="compact")
    rng = np.random.default_rng(17)
    labels = [0, 1, 0, 1, 1, 0, 1, 0]
    parts = {name: _part(name, len(labels), labels, rng) for name in ("ct_ich", "head_ct", "phe_sich")}
    report = tta_report(network, parts)
    assert set(report) == {"ct_ich", "head_ct", "phe_sich"}
    assert all(set(values) == set(SCHEMES) for values in report.values())
    single = Predictor(network)(parts["ct_ich"]).probability
    assert report["ct_ich"]["one_pass"] == pytest.approx(
        binary_metrics(np.array(labels), single, 0.5)["auc"], abs=1e-3
    )


def test_every_slice_score_is_measured_per_collection() -> None:
    import keras

    from ml.evaluate_scores import score_report
    from ml.evaluation.metrics import binary_metrics
    from ml.slice_score import SLICE_SCORES

    keras.utils.set_random_seed(19)
    network = build_multitask((SIZE, SIZE, 1), width=4, backbone="compact")
    rng = np.random.default_rng(19)
    labels = [0, 1, 0, 1, 1, 0, 1, 0]
    parts = {name: _part(name, len(labels), labels, rng) for name in ("ct_ich", "head_ct", "phe_sich")}
    predictor = Predictor(network)
    outputs = {name: predictor(part) for name, part in parts.items()}
    report = score_report(parts, outputs)
    assert set(report) == {"ct_ich", "head_ct", "phe_sich"}
    assert all(set(values) == set(SLICE_SCORES) for values in report.values())
    assert report["head_ct"]["probability"] == pytest.approx(
        binary_metrics(np.array(labels), outputs["head_ct"].probability, 0.5)["auc"], abs=1e-3
    )
