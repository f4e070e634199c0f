"""Schemathesis against the app's own /openapi.json, authenticated: no 5xx, no response off its schema.

Every operation gets a bounded number of generated requests (``EXAMPLES_PER_OPERATION`` valid and
as many invalid ones, fixed seed), sent through the ASGI app with the lifespan running. The counts go to
``test-artifacts/reliability.json`` (section ``fuzzing``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from app.core.config import Settings
from app.main import create_app
from tests.support.artifacts import record

EXAMPLES_PER_OPERATION = 25
# Operations whose 503 is the designed answer in this set-up, with the reason.
DESIGNED_503 = {
    "POST /api/v1/studies/dicomweb": "PACS integration is off here (ICH_DICOMWEB_URL is not set)",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, model_store: Path, api_key: str) -> Iterator[FastAPI]:
    settings_ = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        model_store=model_store,
        default_model="ich-compact",
        api_keys=api_key,
        max_upload_mb=1,
        rate_limit_per_minute=0,
    )
    application = create_app(settings_)
    with TestClient(application):
        yield application


def test_generated_requests_get_no_server_error_and_match_the_schema(app: FastAPI, api_key: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {api_key}"}
    counts: dict[str, int] = {}
    statuses: dict[str, int] = {}
    failures: list[str] = []
    started = time.perf_counter()

    def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
        label = operation.label
        counts.setdefault(label, 0)

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            counts[label] += 1
            response = case.call(headers=headers)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            checks = [response_schema_conformance]
            if not (response.status_code == 503 and label in DESIGNED_503):
                checks.append(not_a_server_error)
            try:
                case.validate_response(response, checks=checks)
            except AssertionError as exc:
                failures.append(f"{label}: {str(exc).splitlines()[0]}")
                raise

        try:
            run()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, label

    for result in schema.get_all_operations():
        operation = result.ok()
        # Valid requests first, then requests that break the schema on purpose (wrong types,
        # missing fields, out-of-range values): both must be answered without a 5xx.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode)
    seconds = time.perf_counter() - started
    record(
        "fuzzing",
        {
            "tool": f"schemathesis {schemathesis.__version__}",
            "operations": len(counts),
            "cases": sum(counts.values()),
            "cases_per_operation": counts,
            "status_codes": dict(sorted(statuses.items())),
            "failures": failures,
            "designed_503": DESIGNED_503,
            "seconds": round(seconds, 1),
        },
    )
    assert len(counts) >= 10
    assert failures == []
