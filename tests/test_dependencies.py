"""The lock files agree with pyproject.toml, and the service's lock holds no training or test tool."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def lock(name: str) -> tuple[dict[str, str], str]:
    text = (REPO_ROOT / "requirements" / name).read_text()
    return pins(text.splitlines()), text


PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
SERVICE = pins(PROJECT["dependencies"])
EXTRAS = {extra: pins(lines) for extra, lines in PROJECT["optional-dependencies"].items()}


def test_every_direct_pin_is_locked_at_its_version() -> None:
    service, _ = lock("service.txt")
    dev, _ = lock("dev.txt")
    for name, version in SERVICE.items():
        assert service.get(name) == version, f"{name}: pyproject {version}, service.txt {service.get(name)}"
        assert dev.get(name) == version, f"{name}: pyproject {version}, dev.txt {dev.get(name)}"
    for extra in ("train", "dev"):
        for name, version in EXTRAS[extra].items():
            assert dev.get(name) == version, f"{name}: pyproject {version}, dev.txt {dev.get(name)}"


def test_locks_pin_every_package_with_hashes() -> None:
    for name in ("service.txt", "dev.txt"):
        locked, text = lock(name)
        entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert len(entries) == len(locked), [line for line in entries if not PIN.match(line)]
        assert text.count("--hash=sha256:") >= len(locked)
        assert "--index-url" not in text and "--find-links" not in text


def test_the_service_lock_leaves_out_training_and_test_tools() -> None:
    service, _ = lock("service.txt")
    for extra in ("train", "dev"):
        for name in EXTRAS[extra]:
            assert name not in service, f"{name} ({extra} extra) would ship in the service's image"


@pytest.mark.parametrize(
    ("package", "extras"), [("app", ()), ("ml", ("train",)), ("bench", ("train", "dev"))]
)
def test_every_third_party_import_is_declared(package: str, extras: tuple[str, ...]) -> None:
    """What a package imports (at module level or inside functions) is a dependency it declares:
    the service only what the image installs, ml and bench their extras too."""
    import_names = {
        "cv2": "opencv-python-headless",
        "yaml": "pyyaml",
        "PIL": "pillow",
        "sklearn": "scikit-learn",
        "jinja2": "jinja2",
        "psycopg": "psycopg",
        "dicomweb_client": "dicomweb-client",
        "multipart": "python-multipart",
        "pydantic_settings": "pydantic-settings",
        "prometheus_client": "prometheus-client",
        "tensorflow": "tensorflow-cpu",
    }
    local = {"app", "ml", "bench", "tests", "__future__"}
    declared = set(SERVICE).union(*(EXTRAS[extra] for extra in extras))
    locked, _ = lock("service.txt")
    missing = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in local or top in sys.stdlib_module_names:
                    continue
                name = canonical(import_names.get(top, top))
                if name not in declared:
                    missing.add(f"{path.relative_to(REPO_ROOT)}: {module} ({name})")
    assert not missing, sorted(missing)
    assert set(SERVICE) <= set(locked)
