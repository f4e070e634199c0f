"""The model registry: every bundle in the model store loaded once, and which of them serves.

:class:`ModelRegistry` loads each bundle as its card says (a classifier, a multitask model or the
configured segmentation model), names the model that serves and the one that outlines its slices,
applies a site's operating point, and answers the cards of loaded models (typed, or as written for
the API); the models themselves are in :mod:`app.services.inference`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.core.errors import ModelUnavailable, NotFound
from app.services.details import OutlineModel
from app.services.inference import SliceClassifier, SliceSegmenter
from app.services.operating_points import OperatingPointInUse
from ml.model_card import KINDS, SEGMENTATION_KIND, ModelCard
from ml.model_io import CARD_FILE, discover_models, load_bundle, read_model_card, version_key

logger = logging.getLogger(__name__)


class ModelRegistry:
    """Every model bundle in the store, loaded once; the newest version of each name serves.

    Classifiers and segmentation models (cards with ``"kind": "segmentation"``) are kept apart:
    requests choose a classifier, and the newest version of ``segmentation_name`` (when one is
    loaded) outlines every slice. Segmentation bundles of other names are not loaded. Multitask
    bundles (``"kind": "multitask"``) are classifiers that outline their own slices: the
    segmentation model does not run for them.
    """

    def __init__(self, default_name: str, segmentation_name: str | None = None) -> None:
        self.default_name = default_name
        self.segmentation_name = segmentation_name or None
        self._models: dict[str, dict[str, SliceClassifier]] = {}
        self._segmenters: dict[str, dict[str, SliceSegmenter]] = {}

    @classmethod
    def from_store(
        cls, store: Path, default_name: str, segmentation_name: str | None = None
    ) -> ModelRegistry:
        """Every bundle in ``store`` that serves (:meth:`load`); one that cannot load is logged
        and left out, so the others still serve."""
        registry = cls(default_name, segmentation_name)
        for versions in discover_models(store).values():
            for model_dir in versions:
                try:
                    registry.load(model_dir)
                except Exception:
                    logger.exception("Could not load the model bundle in %s", model_dir)
        return registry

    def load(self, model_dir: Path) -> None:
        """Load the bundle in ``model_dir``, of any kind, as its card says: a classifier or a
        multitask model, or the configured segmentation model. The card is read and checked once;
        a bundle of an unknown kind, or a segmentation model not configured, is skipped.

        Raises:
            DataError: the card cannot be used (:func:`ml.model_io.read_model_card`).
            MissingDataFile: the bundle has no model file.
        """
        card = read_model_card(model_dir, servable=False)
        if card.kind not in KINDS:
            logger.warning("Skipped the bundle in %s: unknown kind %r.", model_dir, card.kind)
            return
        # Bundles are filed by name: <store>/<name>/<version>.
        if card.kind == SEGMENTATION_KIND and Path(model_dir).parent.name != self.segmentation_name:
            logger.info("Skipped the segmentation bundle in %s: not the one configured.", model_dir)
            return
        card.check_servable(Path(model_dir) / CARD_FILE)
        bundle = load_bundle(model_dir, card)
        if card.kind == SEGMENTATION_KIND:
            self.add_segmenter(SliceSegmenter.from_bundle(bundle))
        else:
            self.add(SliceClassifier(bundle))

    def add(self, classifier: SliceClassifier) -> None:
        self._models.setdefault(classifier.name, {})[classifier.version] = classifier

    def add_segmenter(self, segmenter: SliceSegmenter) -> None:
        self._segmenters.setdefault(segmenter.name, {})[segmenter.version] = segmenter

    @property
    def ready(self) -> bool:
        return self.default_name in self._models

    def use_operating_point(self, point: OperatingPointInUse) -> None:
        """Decide with a site's operating point on the serving classifier (the newest version of
        the default model); other versions keep their cards'."""
        self.get().operating_point = point

    def operating_point(self, name: str, version: str) -> OperatingPointInUse | None:
        """How a loaded classifier decides now; None when it is not loaded."""
        classifier = self._models.get(name, {}).get(version)
        return classifier.operating_point if classifier is not None else None

    def segmenter(self) -> SliceSegmenter | None:
        """The segmentation model that serves (newest version of the configured name), if loaded."""
        versions = self._segmenters.get(self.segmentation_name or "")
        if not versions:
            return None
        return versions[max(versions, key=version_key)]

    def outliner(self, classifier: SliceClassifier | None = None) -> SliceClassifier | SliceSegmenter | None:
        """The model that outlines what ``classifier`` (the default one unless named) analyses:
        the classifier itself when it is a multitask model, else the segmentation model, if loaded."""
        if classifier is None and self.ready:
            classifier = self.get()
        if classifier is not None and classifier.outlines_itself:
            return classifier
        return self.segmenter()

    def model_card(self, name: str, version: str) -> ModelCard:
        """The card of any loaded model: classifier, multitask or segmentation."""
        if name in self._segmenters:
            versions = self._segmenters[name]
            if version not in versions:
                raise NotFound(f"Model {name!r} has no version {version!r}; available: {sorted(versions)}.")
            return versions[version].model_card
        return self.get(name, version).model_card

    def find_card(self, name: str, version: str) -> ModelCard | None:
        """The card of a loaded model of any kind; None when no such model is loaded (a stored
        result outlives its model, and its page and report still render)."""
        try:
            return self.model_card(name, version)
        except (NotFound, ModelUnavailable):
            return None

    def outline_model_card(self, record: Any) -> ModelCard | None:
        """The card of the model named in a stored outline record (a segmentation or a multitask
        model), typed or as stored; None when it names none, or one no longer loaded."""
        named = getattr(record, "model", None)
        if isinstance(named, OutlineModel):
            return self.find_card(named.name, named.version)
        model = record.get("model") if isinstance(record, dict) else None
        if not isinstance(model, dict):
            return None
        return self.find_card(str(model.get("name")), str(model.get("version")))

    def card(self, name: str, version: str) -> dict[str, Any]:
        """The card of any loaded model as written (what the API answers)."""
        return self.model_card(name, version).raw

    def loaded_card(self, name: str, version: str) -> dict[str, Any]:
        """:meth:`find_card` as written; empty when no such model is loaded."""
        card = self.find_card(name, version)
        return card.raw if card is not None else {}

    def outline_card(self, record: Any) -> dict[str, Any]:
        """:meth:`outline_model_card` as written; empty when none."""
        card = self.outline_model_card(record)
        return card.raw if card is not None else {}

    def describe(self) -> list[dict[str, Any]]:
        classifiers = [
            {
                "name": name,
                "version": version,
                "kind": classifier.kind,
                "default": name == self.default_name and version == self._newest(name),
                "threshold": classifier.threshold,
                "study_threshold": classifier.operating_point.study.value,
                "operating_point": classifier.operating_point.slice.source,
                "study_operating_point": classifier.operating_point.study.source,
            }
            for name in sorted(self._models)
            for version, classifier in sorted(
                self._models[name].items(), key=lambda item: version_key(item[0])
            )
        ]
        serving = self.segmenter()
        segmenters = [
            {
                "name": name,
                "version": version,
                "kind": SEGMENTATION_KIND,
                "default": segmenter is serving,
                "threshold": segmenter.blood_threshold,
            }
            for name in sorted(self._segmenters)
            for version, segmenter in sorted(
                self._segmenters[name].items(), key=lambda item: version_key(item[0])
            )
        ]
        return classifiers + segmenters

    def _newest(self, name: str) -> str:
        return max(self._models[name], key=version_key)

    def get(self, name: str | None = None, version: str | None = None) -> SliceClassifier:
        """The named model (newest version unless one is named); the default model otherwise."""
        name = name or self.default_name
        if name not in self._models:
            if name == self.default_name:
                raise ModelUnavailable(
                    f"The model {name!r} is not loaded; the service is not ready. Check ICH_MODEL_STORE."
                )
            raise NotFound(f"No model named {name!r}; available: {sorted(self._models)}.")
        versions = self._models[name]
        chosen = version or self._newest(name)
        if chosen not in versions:
            raise NotFound(f"Model {name!r} has no version {chosen!r}; available: {sorted(versions)}.")
        return versions[chosen]
