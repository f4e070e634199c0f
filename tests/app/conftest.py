"""Fixtures for service tests: tiny model bundles, settings in a temporary folder, a client."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from ml.model_io import save_bundle
from ml.models.classifier import GRADCAM_LAYERS, build_classifier
from tests.support.postgres import PostgresServer, create_database

API_KEY = "ich_test-key-0123456789abcdefghijklmnopqrstuvwxyz"
DATA_DIR = Path(
    os.environ.get("ICH_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
)


def tiny_card(name: str = "ich-compact", version: str = "0.0.1", threshold: float = 0.5) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "threshold": threshold,
        "gradcam_layer": GRADCAM_LAYERS["tiny"],
        "preprocessing": PreprocessConfig(image_size=64).to_dict(),
        "input_shape": [64, 64, 1],
        "limitations": ["Tiny untrained test model."],
        "metrics": {
            "test": {
                "ct_ich": {
                    "slice": {"metrics": {"auc": {"value": 0.5, "ci95": [0.4, 0.6]}}},
                }
            }
        },
    }


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with one tiny, untrained model in two versions.

    Each version's weights come from its own seed, never from whatever random state the tests
    that ran before left behind: Grad-CAM of an untrained model (and so the colour of every
    overlay the service tests look at) depends on them.
    """
    import keras

    store = tmp_path_factory.mktemp("model_store")
    for seed, version in enumerate(("0.0.1", "0.0.2"), start=1):
        keras.utils.set_random_seed(seed)
        model = build_classifier((64, 64, 1), backbone="tiny")
        save_bundle(model, tiny_card(version=version), store / "ich-compact" / version)
    return store


def tiny_seg_card(name: str = "ich-unet", version: str = "0.0.1") -> dict[str, object]:
    """A segmentation card as training writes it, for a tiny untrained U-Net on the classifier's input."""
    return {
        "kind": "segmentation",
        "name": name,
        "version": version,
        "preprocessing": PreprocessConfig(image_size=64).to_dict(),
        "input_shape": [64, 64, 1],
        "blood_threshold": 0.5,
        "min_component_px": 4,
        "subtypes": list(SUBTYPES),
        "subtype_colours": {
            key: "#{:02x}{:02x}{:02x}".format(*colour) for key, colour in SUBTYPE_COLOURS.items()
        },
        "training": {
            "counts": {
                "bhsd_train": {"slices": 40},
                "bhsd_validation": {"slices": 6},
                "bhsd_test": {"slices": 6},
                "ct_ich_train": {"slices": 300},
            }
        },
        "metrics": {"test": {"segmentation": {"any_blood": {"dice": {"value": 0.42, "ci95": [0.31, 0.55]}}}}},
        "pointing_game": {"test_volumes": {"classifier": "ich-compact 0.0.2", "slices": 6, "hit_rate": 0.5}},
        "limitations": ["Tiny untrained segmentation test model."],
    }


@pytest.fixture(scope="session")
def seg_model_store(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier beside a tiny, untrained segmentation model (ich-unet 0.0.1)."""
    import keras

    from ml.models.unet import build_unet

    store = tmp_path_factory.mktemp("seg_model_store")
    shutil.copytree(model_store / "ich-compact" / "0.0.2", store / "ich-compact" / "0.0.2")
    keras.utils.set_random_seed(7)
    save_bundle(build_unet((64, 64, 1), width=4), tiny_seg_card(), store / "ich-unet" / "0.0.1")
    return store


def tiny_multitask_card(name: str = "ich-multitask", version: str = "0.0.1") -> dict[str, object]:
    """A multitask card: a classifier card with the segmentation card's outline fields, for a tiny
    untrained ``build_multitask`` network on the classifier's input."""
    from ml.models.multitask import GRADCAM_LAYER

    classifier, segmentation = tiny_card(name, version), tiny_seg_card(name, version)
    outline_fields = ("blood_threshold", "min_component_px", "subtypes", "subtype_colours", "pointing_game")
    return {
        **classifier,
        "kind": "multitask",
        "gradcam_layer": GRADCAM_LAYER,
        "study_aggregation": "max",
        "study_threshold": 0.5,
        **{key: segmentation[key] for key in outline_fields},
        "training": segmentation["training"],
        "metrics": {
            "test": {
                **classifier["metrics"]["test"],  # type: ignore[index]
                **segmentation["metrics"]["test"],  # type: ignore[index]
            }
        },
        "limitations": ["Tiny untrained multitask test model."],
    }


@pytest.fixture(scope="session")
def multitask_model_store(seg_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, untrained multitask model (ich-multitask 0.0.1) beside the tiny classifier and the
    tiny segmentation model, which must not outline what the multitask model analyses."""
    import keras

    from ml.models.multitask import build_multitask

    store = tmp_path_factory.mktemp("multitask_model_store")
    shutil.copytree(seg_model_store, store, dirs_exist_ok=True)
    keras.utils.set_random_seed(13)
    save_bundle(
        build_multitask((64, 64, 1), width=4), tiny_multitask_card(), store / "ich-multitask" / "0.0.1"
    )
    return store


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server on a free loopback port; yields its base URL."""
    with PostgresServer() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Each API test runs on the embedded SQLite default and on a real PostgreSQL."""
    if request.param == "sqlite":
        return None
    base_url: str = request.getfixturevalue("postgres_server")
    return create_database(base_url, f"ich_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def settings(tmp_path: Path, model_store: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        model_store=model_store,
        default_model="ich-compact",
        api_keys=API_KEY,
        max_upload_mb=2,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield test_client


OpenApp = Callable[[Path, str], AbstractContextManager[TestClient]]


@pytest.fixture
def open_app(tmp_path: Path) -> OpenApp:
    """``open_app(store, default_model)``: a running app on that model store with sign-in off, as
    a person at the web pages meets it (a context manager giving its client)."""

    @contextmanager
    def running(store: Path, default_model: str) -> Iterator[TestClient]:
        settings = Settings(
            data_dir=tmp_path / "data", model_store=store, default_model=default_model, auth_enabled=False
        )
        with TestClient(create_app(settings)) as test_client:
            yield test_client

    return running


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return (DATA_DIR / "head_ct" / "images" / "000.png").read_bytes()


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return (DATA_DIR / "ct_ich" / "Patients_CT" / "050" / "brain" / "1.jpg").read_bytes()


@pytest.fixture(scope="session")
def dicom_bytes() -> bytes:
    return sorted((DATA_DIR / "rsna_dicom" / "dicom").glob("*.dcm"))[0].read_bytes()
