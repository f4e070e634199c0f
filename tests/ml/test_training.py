"""Classifier training and evaluation on a few real images, and the training's sample weights."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ml.callbacks import WeightAverage, refresh_batch_norm
from ml.data.datasets import Sample, read_head_ct
from ml.data.splits import load_manifest
from ml.training import (
    TrainConfig,
    balanced_sample_weights,
    labels_balanced_per_source,
    train,
)


def _sample(dataset: str, label: int, index: int) -> Sample:
    return Sample(
        path=Path(f"{dataset}-{index}.png"), label=label, group=f"{dataset}-{index}", dataset=dataset
    )


def test_balanced_weights_give_every_dataset_and_label_the_same_total() -> None:
    # 3 head_ct positives, 1 head_ct negative, 2 ct_ich positives, 14 ct_ich negatives.
    samples = (
        [_sample("head_ct", 1, i) for i in range(3)]
        + [_sample("head_ct", 0, 3)]
        + [_sample("ct_ich", 1, i) for i in range(2)]
        + [_sample("ct_ich", 0, i) for i in range(2, 16)]
    )
    weights = balanced_sample_weights(samples)
    assert weights.shape == (20,)
    assert weights.mean() == pytest.approx(1.0)
    totals: dict[tuple[str, int], float] = {}
    for sample, weight in zip(samples, weights, strict=True):
        totals[(sample.dataset, sample.label)] = totals.get((sample.dataset, sample.label), 0.0) + weight
    assert len(totals) == 4
    assert all(total == pytest.approx(5.0) for total in totals.values())
    # Within a cell every sample weighs the same: the lone head_ct negative carries its cell.
    assert weights[3] == pytest.approx(5.0)
    assert weights[6:] == pytest.approx(np.full(14, 5.0 / 14))


def test_weights_by_label_alone_are_class_weights() -> None:
    # 4 positives and 16 negatives over two datasets: total / (2 x count) per label.
    samples = [_sample("head_ct", 1, i) for i in range(3)] + [_sample("ct_ich", 1, 3)]
    samples += [_sample("head_ct", 0, i) for i in range(4, 6)] + [
        _sample("ct_ich", 0, i) for i in range(6, 20)
    ]
    weights = balanced_sample_weights(samples, by_dataset=False)
    assert weights[:4] == pytest.approx(np.full(4, 20 / (2 * 4)))
    assert weights[4:] == pytest.approx(np.full(16, 20 / (2 * 16)))


def test_one_cell_gives_unit_weights() -> None:
    samples = [_sample("ct_ich", 0, i) for i in range(5)]
    assert balanced_sample_weights(samples) == pytest.approx(np.ones(5))


def test_labels_balanced_per_source_keep_each_dataset_share() -> None:
    # head_ct: 3 positives, 1 negative; ct_ich: 2 positives, 14 negatives; other: 2 negatives.
    samples = (
        [_sample("head_ct", 1, i) for i in range(3)]
        + [_sample("head_ct", 0, 3)]
        + [_sample("ct_ich", 1, i) for i in range(2)]
        + [_sample("ct_ich", 0, i) for i in range(2, 16)]
        + [_sample("other", 0, i) for i in range(2)]
    )
    weights = labels_balanced_per_source(samples)
    assert weights.mean() == pytest.approx(1.0)
    totals: dict[tuple[str, int], float] = {}
    for sample, weight in zip(samples, weights, strict=True):
        totals[(sample.dataset, sample.label)] = totals.get((sample.dataset, sample.label), 0.0) + weight
    # Each dataset keeps the weight of its images, split evenly between its labels ...
    assert totals == pytest.approx(
        {("head_ct", 1): 2.0, ("head_ct", 0): 2.0, ("ct_ich", 1): 8.0, ("ct_ich", 0): 8.0, ("other", 0): 2.0}
    )
    # ... so the weighted share of positives is the same in every dataset with both labels,
    # where pooled class weights give the small, positive-rich collection far more.
    pooled = balanced_sample_weights(samples, by_dataset=False)
    head = np.array([s.dataset == "head_ct" for s in samples])
    positive = np.array([s.label == 1 for s in samples])
    assert pooled[head & positive].sum() / pooled[head].sum() > 0.85
    assert weights[head & positive].sum() / weights[head].sum() == pytest.approx(0.5)


def test_two_weightings_at_once_or_an_unknown_monitor_are_refused(data_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(balance_sources=True, balance_labels_per_source=True, max_samples=10)
    with pytest.raises(ValueError, match="one weighting"):
        train(config, data_dir, tmp_path / "bundle")
    with pytest.raises(ValueError, match="Unknown monitor"):
        train(TrainConfig(monitor="val_loss", max_samples=10), data_dir, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("weighting", ["labels", "sources", "labels-per-source"])
def test_one_epoch_on_real_images_writes_a_bundle_that_evaluates(
    data_dir: Path, tmp_path: Path, weighting: str
) -> None:
    balance_sources = weighting == "sources"
    from ml.evaluate import main as evaluate_main

    config = TrainConfig(
        name="smoke",
        version="0.0.1",
        backbone="tiny",
        image_size=64,
        batch_size=16,
        epochs=1,
        max_samples=160,
        bootstrap_resamples=20,
        balance_sources=balance_sources,
        balance_labels_per_source=weighting == "labels-per-source",
        monitor="source_auc" if weighting == "labels-per-source" else "auc",
        # One variant keeps the weight average of its only epoch instead of the best checkpoint.
        average_from_epoch=1 if balance_sources else None,
        resample_min_scale=0.5 if balance_sources else TrainConfig.resample_min_scale,
    )
    bundle = tmp_path / "bundle"
    card = train(config, data_dir, bundle, tmp_path / "cache")

    for name in ("model.keras", "model_card.json", "split_manifest.json", "train_config.json"):
        assert (bundle / name).is_file(), name
    written = json.loads((bundle / "model_card.json").read_text())
    assert written == card
    assert written["input_shape"] == [64, 64, 1]
    assert 0.0 <= written["threshold"] <= 1.0
    # The reproduce command names every non-default choice, and the card the augmentation used.
    assert ("--balance-sources" in written["reproduce"]) is balance_sources
    assert ("--balance-labels-per-source" in written["reproduce"]) is (weighting == "labels-per-source")
    assert ("--monitor source_auc" in written["reproduce"]) is (weighting == "labels-per-source")
    assert ("--average-from-epoch 1" in written["reproduce"]) is balance_sources
    assert written["training"]["averaged_epochs"] == (1 if balance_sources else None)
    log_header = (bundle / "training_log.csv").read_text().splitlines()[0].split(",")
    assert ("val_source_auc" in log_header) is (weighting == "labels-per-source")
    assert ("--resample-min-scale 0.5" in written["reproduce"]) is balance_sources
    assert written["augmentation"]["resample_min_scale"] == config.resample_min_scale
    assert written["training"]["epochs_run"] == 1
    # Patient-level split: no patient in two parts, and every image of the subset in one part.
    patients = load_manifest(bundle / "split_manifest.json")
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    images_written = json.loads((bundle / "split_manifest.json").read_text())
    assert sum(len(images_written[part]["images"]) for part in patients) == 160
    test_auc = written["metrics"]["test"]["all"]["slice"]["metrics"]["auc"]["value"]
    assert test_auc is None or 0.0 <= test_auc <= 1.0

    # The generic labelled-CSV path on head_ct images of their original, varied sizes.
    images = read_head_ct(data_dir)[::20]
    labels_csv = tmp_path / "hospital" / "labels.csv"
    labels_csv.parent.mkdir()
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "group"])
        for index, sample in enumerate(images):
            writer.writerow([os.path.relpath(sample.path, labels_csv.parent), sample.label, f"p{index // 2}"])
    output = tmp_path / "evaluation"
    evaluate_main(
        [
            "--model-dir",
            str(bundle),
            "--labels",
            str(labels_csv),
            "--output",
            str(output),
            "--bootstrap-resamples",
            "20",
            "--choose-threshold",
            "0.9",
        ]
    )
    report = json.loads((output / "metrics.json").read_text())
    chosen = report["site_threshold"]["chosen"]
    assert chosen["sensitivity"] >= 0.9 and 0.0 <= chosen["threshold"] <= 1.0
    assert report["site_threshold"]["card"]["threshold"] == pytest.approx(written["threshold"], abs=1e-6)
    # Without a positive image there is no threshold to choose: a clear error, no traceback.
    negatives_csv = labels_csv.parent / "negatives.csv"
    negatives_csv.write_text(
        "image,label\n"
        + "".join(f"{os.path.relpath(s.path, labels_csv.parent)},0\n" for s in images if s.label == 0)
    )
    with pytest.raises(SystemExit) as stopped:
        evaluate_main(
            ["--model-dir", str(bundle), "--labels", str(negatives_csv), "--choose-threshold", "0.95"]
        )
    assert stopped.value.code == 2
    assert report["model"] == {"name": "smoke", "version": "0.0.1"}
    assert report["slice"]["n"] == len(images)
    assert report["slice"]["n_positive"] == sum(sample.label for sample in images)
    assert set(report["slice"]["metrics"]) == {
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "auc",
    }
    assert report["patient"]["n"] == (len(images) + 1) // 2
    # A card from ml.train has no study rule yet: the most suspicious slice against its threshold.
    assert report["study"]["aggregation"] == "max"
    assert report["study"]["threshold"] == pytest.approx(written["threshold"], abs=1e-6)
    assert report["study"]["n"] == report["patient"]["n"]
    for plot in ("roc_slice.png", "confusion_slice.png", "calibration_slice.png", "confusion_patient.png"):
        assert (output / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


def test_the_card_command_parses_back_to_the_same_configuration() -> None:
    from ml.train import parse_args

    config = TrainConfig(
        version="2.0.0",
        width=24,
        clahe=True,
        learning_rate=5e-4,
        init_from="artifacts/stage1/model.keras",
        patience=15,
        balance_sources=True,
        resample_min_scale=0.5,
        blur_max_sigma=1.0,
    )
    other = TrainConfig(
        version="2.1.0", balance_labels_per_source=True, monitor="source_auc", average_from_epoch=3
    )
    for chosen in (config, other):
        command = chosen.command().split()
        assert command[:3] == ["python", "-m", "ml.train"]
        args = vars(parse_args(command[3:]))
        for field_name, value in vars(chosen).items():
            option = {"time_budget_minutes": "time_budget_min"}.get(field_name, field_name)
            if option in args:
                assert args[option] == value, field_name
    # Defaults stay out of the command.
    assert "--width" not in TrainConfig().command() and "--patience" not in TrainConfig().command()


def test_weight_average_takes_the_mean_of_the_epochs_from_its_start() -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    average = WeightAverage(start_epoch=2)
    average.set_model(model)
    kernel, bias = model.trainable_variables
    for epoch, value in enumerate([10.0, 1.0, 3.0]):
        kernel.assign(np.full((2, 1), value, np.float32))
        bias.assign(np.full((1,), -value, np.float32))
        average.on_epoch_end(epoch)
    # The first epoch (10) comes before the start; the mean of epochs 2 and 3 is 2.
    assert average.apply() == 2
    assert kernel.numpy() == pytest.approx(np.full((2, 1), 2.0))
    assert bias.numpy() == pytest.approx(np.full((1,), -2.0))


def test_refresh_batch_norm_measures_the_statistics_of_the_data() -> None:
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    norm = model.layers[0]
    norm.moving_mean.assign(np.full(3, 50.0, np.float32))
    norm.moving_variance.assign(np.full(3, 0.01, np.float32))
    rng = np.random.default_rng(0)
    values = rng.normal([1.0, -2.0, 0.5], [2.0, 0.5, 1.0], size=(3200, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((values, np.zeros(len(values), np.float32))).batch(64)
    refresh_batch_norm(model, data)
    assert norm.moving_mean.numpy() == pytest.approx([1.0, -2.0, 0.5], abs=0.15)
    assert norm.moving_variance.numpy() == pytest.approx([4.0, 0.25, 1.0], rel=0.2)
    # Only the statistics move: scale and offset stay as they were.
    assert norm.gamma.numpy() == pytest.approx(np.ones(3))
    assert norm.beta.numpy() == pytest.approx(np.zeros(3))


def test_an_average_start_outside_the_epochs_is_refused(data_dir: Path, tmp_path: Path) -> None:
    for start in (0, 61):
        with pytest.raises(ValueError, match="average_from_epoch"):
            train(TrainConfig(epochs=60, average_from_epoch=start, max_samples=10), data_dir, tmp_path / "b")
    assert not (tmp_path / "b").exists()
