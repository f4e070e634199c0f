"""Training and evaluation of the segmentation-and-subtype model (``ml.models.unet``).

Data: ``bhsd_seg`` slices with masks (split by volume), CT-ICH normal slices as examples of
"no blood" and CT-ICH haemorrhage slices for the subtype head, CT-ICH kept in the patient split
of the classifier. Loss: cross-entropy plus soft Dice (any blood and per subtype) for the mask,
binary cross-entropy for the subtypes. The post-processing (blood threshold, smallest kept
component) is chosen on validation volumes and normal validation slices, then the held-out
volumes and test slices are measured once.

:func:`train_segmentation` runs the stages in order; each has its module: :mod:`.config` (the
hyperparameters), :mod:`.data` (splits, preprocessed slices and masks, mixed batches),
:mod:`.postprocessing` (predicted masks, the epoch's score, the chosen post-processing),
:mod:`.fitting` (loss, model, fit) and :mod:`.card` (measures and model card).
``python -m ml.train_seg`` is its command line.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras

from ml.data.preprocessing import PreprocessConfig
from ml.model_io import read_card
from ml.seg_reports import (
    ct_ich_detection_report,
    evaluate_segmentation,
    normal_slices_report,
    pointing_game,
    subtype_report,
)
from ml.seg_training.card import measure, model_card
from ml.seg_training.config import SegTrainConfig
from ml.seg_training.data import Prepared, merge, prepare, read_data
from ml.seg_training.fitting import compiled_unet, fit, mask_loss
from ml.seg_training.postprocessing import choose_postprocessing, clear_rate, pooled_blood_dice, predict_masks

__all__ = [
    "Prepared",
    "SegTrainConfig",
    "choose_postprocessing",
    "clear_rate",
    "ct_ich_detection_report",
    "evaluate_segmentation",
    "mask_loss",
    "merge",
    "normal_slices_report",
    "pointing_game",
    "pooled_blood_dice",
    "predict_masks",
    "prepare",
    "subtype_report",
    "train_segmentation",
]


def train_segmentation(
    config: SegTrainConfig, data_dir: Path, output_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Train, choose the post-processing on validation, test once, write the bundle and card.

    Every random draw follows ``config.seed`` in a fixed order (the splits, the initial weights,
    the mixing, shuffling and augmentation), so the same configuration trains the same model.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    classifier_dir = Path(config.classifier_dir)
    classifier_card = read_card(classifier_dir)
    preprocess_config = PreprocessConfig.from_dict(classifier_card["preprocessing"])

    data = read_data(config, data_dir, output_dir, classifier_card, preprocess_config, cache_dir)
    model = compiled_unet(config, preprocess_config.image_size)
    fitted = fit(config, model, data, output_dir)
    postprocessing, metrics = measure(config, fitted.model, data)
    all_bhsd = prepare(
        [*data.bhsd["train"], *data.bhsd["validation"], *data.bhsd["test"]], preprocess_config, cache_dir
    )
    pointing = {
        "test_volumes": pointing_game(classifier_dir, data.parts["bhsd_test"]),
        "all_bhsd_seg_slices": pointing_game(classifier_dir, all_bhsd),
    }
    card = model_card(
        config, classifier_card, preprocess_config, data, fitted, postprocessing, metrics, pointing
    )
    card["total_seconds"] = round(time.monotonic() - started, 1)
    (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    (output_dir / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
