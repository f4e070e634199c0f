"""Shared fixtures: where the real datasets live, and a tiny untrained classifier."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

from ml.models.classifier import build_classifier  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"

# Tiers (`make unit` runs none of these; `make test` runs every test):
# fixtures that read the real datasets,
DATA_FIXTURES = frozenset({"data_dir", "png_bytes", "jpeg_bytes", "dicom_bytes", "series"})
# fixtures that start a real server,
INTEGRATION_FIXTURES = frozenset({"postgres_server", "orthanc"})
# and modules whose every test starts a real server, program or browser (a test that starts one
# of the project's own command-line tools is marked 'integration' where it is defined).
MODULE_TIERS = {
    "test_browser.py": ("e2e", "integration", "data"),
    "test_deployment.py": ("integration", "data"),
    "test_fuzz.py": ("integration", "data"),
    "test_job_queue.py": ("integration", "data"),
    "test_load_faults.py": ("integration", "data"),
    "test_pacs.py": ("integration", "data"),
    "test_server.py": ("integration", "data"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tiers it belongs to, from its fixtures and its module."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        tiers = set(MODULE_TIERS.get(item.path.name, ()))
        if fixtures & DATA_FIXTURES:
            tiers.add("data")
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
        if fixtures & INTEGRATION_FIXTURES or on_postgres:
            tiers.add("integration")
        for tier in sorted(tiers):
            item.add_marker(tier)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the real datasets: ``ICH_DATA_DIR``, else ``../shared/datasets`` next to the repo."""
    path = Path(os.environ.get("ICH_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser().resolve()
    if not path.is_dir():
        message = f"Real datasets not found at {path}; set ICH_DATA_DIR to the datasets folder."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    """The ``tiny`` backbone on 64 x 64 inputs, untrained, with seeded weights."""
    keras.utils.set_random_seed(0)
    return build_classifier(input_shape=(64, 64, 1), backbone="tiny")
