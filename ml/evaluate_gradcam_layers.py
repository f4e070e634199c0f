"""Command line: which layer's Grad-CAM of the slice probability points at the bleed, on the
validation split of a multitask bundle?

For each candidate layer of the shared encoder, from the 1/16 map the card names down to the 1/4
map, and each weighting (Grad-CAM's mean gradient per map, HiResCAM's gradient per cell), the share of validation slices whose heat map peaks inside the labelled bleed (``bhsd_seg``
blood masks, ``phe_sich`` haematoma boxes)::

    python -m ml.evaluate_gradcam_layers --model-dir model_store/ich-multitask/1.1.0

The test split is not used.
"""

from __future__ import annotations

import json

from ml.explain.gradcam import WEIGHTINGS
from ml.multitask_bundle import pointing_game, validation_command

# The encoder's last map at each scale: 1/16 (what the card names today), 1/8 and 1/4.
CANDIDATE_LAYERS = ("gradcam_features", "block3_relu2", "block2_relu2")


def main(argv: list[str] | None = None) -> None:
    model, parts = validation_command(
        "python -m ml.evaluate_gradcam_layers", __doc__.splitlines()[0] if __doc__ else "", argv
    )
    report = {
        f"{layer} {weighting}": pointing_game(model, parts, layer, weighting)
        for weighting in WEIGHTINGS
        for layer in CANDIDATE_LAYERS
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
