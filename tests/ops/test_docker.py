"""docker/: the image recipe, the compose file and the dependency lock, checked without a Docker engine."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from coordination_api.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def runtime_closure() -> dict[str, str]:
    """docker/lock.py's closure (a script beside the Dockerfile, not a package)."""
    spec = importlib.util.spec_from_file_location("docker_lock", DOCKER / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    closure: dict[str, str] = module.runtime_closure()
    return closure


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _lock() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_dockerfile_copy_sources_exist() -> None:
    copies = [args.split() for word, args in _instructions() if word == "COPY"]
    local = [args for args in copies if not any(a.startswith("--from") for a in args)]
    assert local
    for args in local:
        for source in [a for a in args if not a.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    instructions = _instructions()
    stages = [args for word, args in instructions if word == "FROM"]
    assert len(stages) >= 2
    base = next(args for word, args in instructions if word == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    user = [args for word, args in instructions if word == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    healthcheck = next(args for word, args in instructions if word == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert any(word == "RUN" and "requirements.lock" in args for word, args in instructions)
    entrypoint = next(args for word, args in instructions if word == "ENTRYPOINT")
    assert entrypoint == '["coordination"]'


def test_lock_agrees_with_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = _lock()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in docker/requirements.lock (run docker/lock.py)"
        assert requirement.specifier.contains(lock[name]), f"{name}: lock {lock[name]}, pyproject {spec}"


def test_lock_holds_every_runtime_dependency_of_the_venv() -> None:
    # Names only: versions of indirect dependencies may differ in another venv; the image uses the lock.
    assert set(runtime_closure()) <= set(_lock()), "docker/requirements.lock is stale: run docker/lock.py"


def test_compose_services_and_start_order() -> None:
    services = _compose()["services"]
    assert {"db", "migrate", "app", "worker", "mllp"} <= set(services)
    db = services["db"]
    assert db["image"].startswith("postgres:15")
    assert "healthcheck" in db and any(v.startswith("pgdata:") for v in db["volumes"])
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    for name in ("app", "worker", "mllp"):
        depends = services[name]["depends_on"]
        assert depends == {"migrate": {"condition": "service_completed_successfully"}}, name
    assert services["app"]["command"][0] == "serve"
    assert services["worker"]["command"][0] == "worker"
    assert services["mllp"]["command"][0] == "mllp"


def test_compose_secrets_are_files_config_reads(tmp_path: Path) -> None:
    compose = _compose()
    declared = set(compose["secrets"])
    env: dict[str, str] = {}
    for name in ("migrate", "app", "worker", "mllp"):
        service = compose["services"][name]
        assert set(service["secrets"]) <= declared
        env.update({k: str(v) for k, v in service["environment"].items() if k.endswith("_FILE")})
    assert set(env) == {"COORDINATION_DATABASE_URL_FILE", "COORDINATION_SECRET_KEY_FILE"}
    # config.py reads those *_FILE variables (docker secrets mounted under /run/secrets).
    (tmp_path / "url").write_text("postgresql+psycopg://coordination:pw@db:5432/coordination\n")
    (tmp_path / "key").write_text("k3y\n")
    settings = Settings.from_env(
        {
            "COORDINATION_DATABASE_URL_FILE": str(tmp_path / "url"),
            "COORDINATION_SECRET_KEY_FILE": str(tmp_path / "key"),
        }
    )
    assert settings.database_url == "postgresql+psycopg://coordination:pw@db:5432/coordination"
    assert settings.secret_key == "k3y"


def test_compose_config_with_the_docker_client() -> None:
    """`docker compose config` where the client and its compose plugin exist (no engine needed)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the docker client here has no compose plugin")
    result = subprocess.run(
        ["make", "-s", "compose-check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_export_files_live_on_a_volume_shared_by_app_and_worker() -> None:
    """Bulk Data files are written by the worker and served by the app: one volume for both."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    export_dir = services["app"]["environment"]["COORDINATION_EXPORT_DIR"]
    for name in ("app", "worker"):
        assert f"exports:{export_dir}" in services[name]["volumes"], name
    assert "exports" in compose["volumes"]
