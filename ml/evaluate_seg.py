"""Command line: evaluate a segmentation bundle; Dice, IoU, lesion detection, normal slices.

Without ``--labels`` it measures the bundle's own held-out data again: the ``bhsd_seg`` test
volumes of its ``split_manifest.json``, and the CT-ICH test patients of the classifier it was
trained beside (normal slices: no false blood; all slices: subtype AUC). With ``--labels`` it
measures any folder of slices with class-index masks::

    python -m ml.evaluate_seg --model-dir model_store/ich-unet/1.0.0 \
        --labels my_site/masks.csv --image-col image --mask-col mask --group-col volume

where mask pixels hold 0 (background) or 1..5 (epidural, intraparenchymal, intraventricular,
subarachnoid, subdural), at the image's size. ``--hounsfield-png`` windows images stored as
Hounsfield units clipped to 0..255 (as ``bhsd_seg`` is) to the brain window first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import default_data_dir, load_raw_image, read_csv_rows
from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import (
    SUBTYPES,
    SegSample,
    read_bhsd,
    read_ct_ich_subtypes,
    split_ct_ich_by_manifest,
)
from ml.errors import DataError, MissingDataFile
from ml.model_io import CARD_FILE, MODEL_FILE, read_card_json
from ml.seg_training import (
    Prepared,
    ct_ich_detection_report,
    evaluate_segmentation,
    merge,
    normal_slices_report,
    pointing_game,
    predict_masks,
    prepare,
    subtype_report,
)

logger = logging.getLogger(__name__)


def read_mask_csv(
    csv_path: Path,
    image_col: str = "image",
    mask_col: str = "mask",
    group_col: str | None = "group",
    hounsfield_png: bool = False,
) -> list[SegSample]:
    """Slices with masks from a CSV (paths relative to it); subtypes are read off the masks."""
    csv_path = Path(csv_path)
    rows = read_csv_rows(csv_path)
    if not rows:
        raise DataError(f"{csv_path} has no rows.")
    for required in (image_col, mask_col):
        if required not in rows[0]:
            raise DataError(
                f"{csv_path} has no column {required!r}; columns are {sorted(rows[0])}. "
                "Name the right ones with --image-col and --mask-col."
            )
    samples = []
    for index, row in enumerate(rows, start=2):
        if not (row[image_col] or "").strip() or not (row[mask_col] or "").strip():
            raise DataError(f"{csv_path}, line {index}: empty {image_col!r} or {mask_col!r}.")
        mask_path = (csv_path.parent / row[mask_col].strip()).resolve()
        mask = load_raw_image(mask_path)
        present = np.unique(mask)
        samples.append(
            SegSample(
                path=(csv_path.parent / row[image_col].strip()).resolve(),
                mask_path=mask_path,
                subtypes=tuple(int(k in present) for k in range(1, len(SUBTYPES) + 1)),
                group=(row.get(group_col or "", "") or row[image_col]).strip(),
                dataset=csv_path.parent.name,
                mask_known=True,
                hounsfield_png=hounsfield_png,
            )
        )
    return samples


def held_out(model_dir: Path, data_dir: Path, card: dict[str, Any]) -> dict[str, list[SegSample]]:
    """The bundle's test volumes and the classifier's CT-ICH test patients."""
    manifest_path = model_dir / "split_manifest.json"
    if not manifest_path.is_file():
        raise MissingDataFile(
            f"No split_manifest.json in {model_dir}: name the slices to measure with --labels."
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    test_volumes = set(manifest["bhsd_seg_volumes"]["test"])
    classifier_dir = Path(card["training"]["config"]["classifier_dir"])
    ct_ich = split_ct_ich_by_manifest(read_ct_ich_subtypes(data_dir), classifier_dir / "split_manifest.json")
    return {
        "bhsd_test": [s for s in read_bhsd(data_dir) if s.group in test_volumes],
        "ct_ich_test": ct_ich["test"],
    }


def evaluate_bundle(
    model_dir: Path,
    data_dir: Path,
    labels: list[SegSample] | None = None,
    resamples: int = 1000,
    cache_dir: Path | None = None,
    classifier_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of the bundle in ``model_dir`` on its held-out data, or on ``labels``."""
    model_dir = Path(model_dir)
    card = read_card_json(model_dir / CARD_FILE)
    if not (model_dir / MODEL_FILE).is_file():
        raise MissingDataFile(f"No {MODEL_FILE} in {model_dir}.")
    model = keras.saving.load_model(model_dir / MODEL_FILE, compile=False)
    config = PreprocessConfig.from_dict(card["preprocessing"])
    threshold, min_px = float(card["blood_threshold"]), int(card["min_component_px"])
    seed = int(card.get("training", {}).get("config", {}).get("seed", 0))
    report: dict[str, Any] = {"model": {"name": card["name"], "version": card["version"]}}
    if labels is not None:
        part = prepare(labels, config, cache_dir)
        masks, _ = predict_masks(model, part.images)
        report["segmentation"] = evaluate_segmentation(masks, part, threshold, min_px, resamples, seed)
        if classifier_dir is not None:
            report["pointing_game"] = pointing_game(classifier_dir, part)
        return report
    parts = {
        name: prepare(samples, config, cache_dir)
        for name, samples in held_out(model_dir, data_dir, card).items()
    }
    masks, bhsd_subtypes = predict_masks(model, parts["bhsd_test"].images)
    ct_ich: Prepared = parts["ct_ich_test"]
    ct_ich_masks, ct_ich_subtypes = predict_masks(model, ct_ich.images)
    report["segmentation"] = evaluate_segmentation(
        masks, parts["bhsd_test"], threshold, min_px, resamples, seed
    )
    report["normal_ct_ich_slices"] = normal_slices_report(
        ct_ich_masks[ct_ich.mask_known == 1], threshold, min_px
    )
    report["subtypes_ct_ich"] = subtype_report(ct_ich, ct_ich_subtypes, resamples, seed)
    report["subtypes_held_out"] = subtype_report(
        merge(ct_ich, parts["bhsd_test"]), np.concatenate([ct_ich_subtypes, bhsd_subtypes]), resamples, seed
    )
    report["ct_ich_slices"] = ct_ich_detection_report(
        ct_ich, ct_ich_masks, threshold, min_px, resamples, seed
    )
    report["pointing_game"] = pointing_game(
        classifier_dir or Path(card["training"]["config"]["classifier_dir"]), parts["bhsd_test"]
    )
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.evaluate_seg", description="Evaluate a segmentation bundle.")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--labels", type=Path, help="CSV of images and masks (paths relative to it)")
    parser.add_argument("--image-col", default="image")
    parser.add_argument("--mask-col", default="mask")
    parser.add_argument("--group-col", default="group", help="scan or patient id (bootstrap unit)")
    parser.add_argument("--hounsfield-png", action="store_true", help="images hold HU clipped to 0..255")
    parser.add_argument(
        "--classifier-dir", type=Path, help="also play the pointing game with this classifier"
    )
    parser.add_argument("--output", type=Path, help="JSON file for the report")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    labels = None
    with data_errors(parser):
        if args.labels is not None:
            labels = read_mask_csv(
                args.labels, args.image_col, args.mask_col, args.group_col, args.hounsfield_png
            )
        report = evaluate_bundle(
            args.model_dir,
            args.data_dir,
            labels,
            args.bootstrap_resamples,
            classifier_dir=args.classifier_dir,
        )
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
        logger.info("Report written to %s", args.output)


if __name__ == "__main__":
    main()
