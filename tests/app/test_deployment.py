"""The Docker image and the Compose stack, checked without a Docker engine.

``docker-compose config`` validates the stack; the Dockerfile is read for what it copies, sets and
runs; and the image's exact command and environment are run here against a real PostgreSQL and
a real Orthanc.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pydicom
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.cli import build_parser, healthcheck
from app.core.config import Settings
from app.db import Database
from tests.support.orthanc import OrthancServer
from tests.support.postgres import create_database, free_port
from tests.support.server import ServiceProcess

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
SETTINGS_PREFIX = "ICH_"


def dockerfile_instructions(stage: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined; only ``stage`` if named."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        part = line.removesuffix("\\").strip()
        current = f"{current} {part}" if current else part
        if not line.endswith("\\"):
            keyword, _, arguments = current.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    if stage is None:
        return instructions
    selected: list[tuple[str, str]] = []
    inside = False
    for keyword, arguments in instructions:
        if keyword == "FROM":
            inside = arguments.split()[-1] == stage
        if inside:
            selected.append((keyword, arguments))
    return selected


def dockerfile_env(stage: str = "runtime") -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(stage):
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def dockerfile_exec_form(keyword: str, stage: str = "runtime") -> list[str]:
    """The JSON (exec) form of the stage's last ``keyword`` instruction, e.g. CMD or HEALTHCHECK."""
    found = [arguments for name, arguments in dockerfile_instructions(stage) if name == keyword]
    assert found, f"No {keyword} in the {stage} stage"
    command: list[str] = json.loads(found[-1][found[-1].index("[") :])
    return command


def local_command(command: list[str]) -> list[str]:
    """The image's command with its ``python`` (the venv's, first on PATH) as this interpreter."""
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def image_tree(target: Path) -> Path:
    """What the runtime stage copies from the repository, laid out as in the image."""
    for keyword, arguments in dockerfile_instructions("runtime"):
        if keyword == "COPY" and not arguments.startswith("--"):
            source, destination = shlex.split(arguments)
            if (PROJECT_ROOT / source).is_dir():
                shutil.copytree(
                    PROJECT_ROOT / source, target / destination, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(PROJECT_ROOT / source, target / destination)
    return target


def settings_variables() -> set[str]:
    return {SETTINGS_PREFIX + name.upper() for name in Settings.model_fields}


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: run 'make system-deps' (Debian package docker-compose)."
        )
    # Only the env file: variables of the calling shell would override it.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(PROJECT_ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The stack as ``docker-compose config`` resolves it with an .env made from .env.example."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("change-me", "Secret123"))
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = yaml.safe_load(result.stdout)
    return loaded


def test_compose_file_is_valid_and_wires_the_stack(compose: dict[str, object]) -> None:
    services: dict[str, dict[str, object]] = compose["services"]  # type: ignore[assignment]
    assert set(services) == {"app", "worker", "redis", "postgres", "orthanc"}
    app = services["app"]
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "orthanc": {"condition": "service_started"},
    }
    environment: dict[str, str] = app["environment"]  # type: ignore[assignment]
    assert environment["ICH_DATABASE_URL"] == "postgresql+psycopg://ich:Secret123@postgres:5432/ich"
    assert environment["ICH_DICOMWEB_URL"] == "http://orthanc:8042/dicom-web"
    assert environment["ICH_DICOMWEB_USERNAME"] == "ich"
    assert environment["ICH_DICOMWEB_PASSWORD"] == "Secret123"
    assert environment["ICH_DICOMWEB_POLL_SECONDS"] == "0"
    assert set(environment) <= settings_variables()
    assert any(str(volume).startswith("app-data:/data") for volume in app["volumes"])  # type: ignore[attr-defined]
    for service in services.values():
        assert "healthcheck" in service and service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")  # type: ignore[index]
        for port in service.get("ports", []):  # type: ignore[attr-defined]
            assert str(port).startswith("127.0.0.1:"), port
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "Secret123"  # type: ignore[index]
    assert any("/var/lib/postgresql/data" in str(volume) for volume in postgres["volumes"])  # type: ignore[attr-defined]
    orthanc = services["orthanc"]
    assert orthanc["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"  # type: ignore[index]
    assert json.loads(orthanc["environment"]["ORTHANC__REGISTERED_USERS"]) == {"ich": "Secret123"}  # type: ignore[index]
    assert set(compose["volumes"]) == {"app-data", "postgres-data", "orthanc-data", "redis-data"}  # type: ignore[arg-type]
    # Study jobs go through Redis to the workers: the same image and settings, the same data volume,
    # no published port (so that --scale worker=N works).
    assert environment["ICH_JOB_QUEUE_URL"] == "redis://redis:6379/0"
    worker = services["worker"]
    assert worker["image"] == app["image"] and worker["command"] == ["python", "-m", "app.worker"]
    worker_environment: dict[str, str] = worker["environment"]  # type: ignore[assignment]
    assert set(worker_environment) <= settings_variables()
    for name in ("ICH_JOB_QUEUE_URL", "ICH_DATABASE_URL", "ICH_DICOMWEB_URL", "ICH_OPERATING_POINT"):
        assert worker_environment[name] == environment[name], name
    assert any(str(volume).startswith("app-data:/data") for volume in worker["volumes"])  # type: ignore[attr-defined]
    assert "ports" not in worker and "container_name" not in worker
    assert worker["depends_on"]["redis"] == {"condition": "service_healthy"}  # type: ignore[index]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]  # type: ignore[index]
    # The app's healthcheck is the one the image declares.
    assert app["healthcheck"]["test"][1:] == dockerfile_exec_form("HEALTHCHECK")  # type: ignore[index]


def test_compose_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ORTHANC_PASSWORD=Secret123\n")
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_no_secret_is_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=PROJECT_ROOT, capture_output=True, timeout=30
    )
    assert ignored.returncode == 0, ".env must stay ignored by git"
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().split(), "keep .env out of images"
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if line.startswith("#") or not value:
            continue
        if "PASSWORD" in name or "SECRET" in name or "KEY" in name:
            assert value == "change-me", f"{name} in .env.example must be a placeholder"


def test_every_path_the_dockerfile_copies_exists() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    copies = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for arguments in copies:
        if arguments.startswith("--from="):
            continue
        *sources, _destination = shlex.split(arguments)
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path"
            top = source.strip("/").split("/")[0]
            assert top not in ignored, f"COPY {source}, but .dockerignore leaves it out of the context"
    # The app finds these beside its code (PROJECT_ROOT), so the image must have them all.
    copied = {shlex.split(arguments)[0].strip("/") for arguments in copies if not arguments.startswith("--")}
    assert {"app", "ml", "templates", "static", "model_store", "requirements/service.txt"} <= copied
    assert (PROJECT_ROOT / "model_store" / Settings().default_model).is_dir()


def test_image_runs_the_service_as_configured() -> None:
    runtime = dockerfile_instructions("runtime")
    base = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert len(base) == 2 and all("${PYTHON_IMAGE}" in line for line in base)
    assert any(
        keyword == "ARG" and arguments.startswith("PYTHON_IMAGE=python:3.11-slim")
        for keyword, arguments in dockerfile_instructions()
    )
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [arguments for keyword, arguments in runtime if keyword == "STOPSIGNAL"] == ["SIGTERM"]

    env = dockerfile_env()
    ich = {name: value for name, value in env.items() if name.startswith(SETTINGS_PREFIX)}
    assert set(ich) <= settings_variables(), set(ich) - settings_variables()
    assert {"ICH_HOST", "ICH_PORT", "ICH_WORKERS", "ICH_DATA_DIR"} <= set(ich)
    # The values parse as the service's settings.
    parsed = Settings.model_validate(
        {name.removeprefix(SETTINGS_PREFIX).lower(): v for name, v in ich.items()}
    )
    assert parsed.host == "0.0.0.0" and parsed.workers >= 1 and str(parsed.data_dir) == "/data"
    volumes = json.loads(next(arguments for keyword, arguments in runtime if keyword == "VOLUME"))
    assert str(parsed.data_dir) in volumes and "/models" in volumes
    assert [arguments for keyword, arguments in runtime if keyword == "EXPOSE"] == [str(parsed.port)]

    assert dockerfile_exec_form("CMD") == ["python", "-m", "app"]
    assert (PROJECT_ROOT / "app" / "__main__.py").is_file()
    healthcheck = dockerfile_exec_form("HEALTHCHECK")
    assert healthcheck[:3] == ["python", "-m", "app.cli"]
    build_parser().parse_args(healthcheck[3:])


def test_container_command_with_postgres_and_orthanc(
    tmp_path: Path, postgres_server: str, model_store: Path, dicom_bytes: bytes
) -> None:
    """``python -m app`` with the image's files and environment: workers, JSON logs, first key,
    metrics, graceful stop.

    It runs in a folder holding only what the image copies. Only what differs outside a
    container is changed: loopback address and a free port, a temporary data folder, the test
    PostgreSQL and the tiny test model instead of the shipped one.
    """
    database_url = create_database(postgres_server, f"ich_{uuid.uuid4().hex[:12]}")
    env = {
        **dockerfile_env(),
        "ICH_DATA_DIR": str(tmp_path / "data"),
        "ICH_MODEL_STORE": str(model_store),
        "ICH_DEFAULT_MODEL": "ich-compact",
        "ICH_DATABASE_URL": database_url,
        "ICH_API_KEYS": "",
        "ICH_INFERENCE_THREADS": "1",
    }
    env.pop("PATH", None)
    assert int(env["ICH_WORKERS"]) >= 2, "the test expects the image to run several workers"

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes))
    dataset.PatientName = "Doe^Jane"
    dataset.PatientID = "PID-314159"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    dicom = buffer.getvalue()

    workdir = image_tree(tmp_path / "srv-ich")
    with (
        OrthancServer() as orthanc,
        ServiceProcess(env, command=local_command(dockerfile_exec_form("CMD")), cwd=workdir) as server,
    ):
        # The archive of the stack answers DICOMweb (QIDO-RS) and holds what is sent to it.
        assert httpx.post(f"{orthanc.url}/instances", content=dicom, timeout=30).status_code == 200
        studies = httpx.get(f"{orthanc.dicomweb_url}/studies", timeout=30)
        assert studies.status_code == 200
        assert [study["0020000D"]["Value"][0] for study in studies.json()] == [str(dataset.StudyInstanceUID)]

        # The image's HEALTHCHECK command, run as the container would.
        probe = subprocess.run(
            local_command(dockerfile_exec_form("HEALTHCHECK")),
            cwd=workdir,
            env={**os.environ, **env, "ICH_HOST": "0.0.0.0", "ICH_PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr

        # Several workers, one first key: created before the workers started.
        keys = re.findall(r"\bich_[A-Za-z0-9_-]{20,}", server.log())
        assert len(keys) == 1, server.log()
        headers = {"Authorization": f"Bearer {keys[0]}", "X-Request-ID": "compose-test-1"}
        created = httpx.post(
            f"{server.url}/api/v1/predictions",
            files={"file": ("slice.dcm", dicom, "application/dicom")},
            headers=headers,
            timeout=120,
        )
        assert created.status_code == 201, created.text
        assert created.headers["X-Request-ID"] == "compose-test-1"
        assert created.json()["study"]["patient_name"] == "Doe^Jane"

        # Whichever worker answers, /metrics sums all of them.
        for _ in range(4):
            text = httpx.get(f"{server.url}/metrics", timeout=30).text
            predictions = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "ich_predictions_total"
            )
            assert predictions == 1.0
        assert 'route="/api/v1/predictions",status="201"' in text
        server.stop()
        assert server.process is not None and server.process.returncode == 0, server.log()

    log = server.log()
    for secret in ("Doe", "Jane", "PID-314159", str(dataset.StudyInstanceUID)):
        assert secret not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [entry for entry in entries if entry.get("logger") == "app.requests"]
    assert {
        (entry["method"], entry["route"], entry["status"], entry["request_id"])
        for entry in requests
        if entry["request_id"] == "compose-test-1"
    } == {("POST", "/api/v1/predictions", 201, "compose-test-1")}
    assert all(entry["duration_ms"] >= 0 for entry in requests)
    # Every line is a JSON object, but for the indented one-time key notice and TensorFlow's
    # native start-up lines, which bypass Python logging.
    native = re.compile(r"([IWEF]\d{4} |WARNING: All log messages before absl)")
    others = [
        line
        for line in log.splitlines()
        if line.strip() and not line.startswith("{") and not native.match(line)
    ]
    assert others and all(line.startswith("    ") for line in others), others

    database = Database(database_url)
    try:
        assert database.revision() is not None
    finally:
        database.dispose()


def test_healthcheck_fails_when_the_service_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck(Settings(host="0.0.0.0", port=free_port()), timeout=2) == 1
    assert "/readyz did not answer" in capsys.readouterr().err
