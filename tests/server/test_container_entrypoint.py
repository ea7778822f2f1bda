"""The container's entry point, run outside Docker (Docker cannot run here), and a static check of the image recipe.

`packaging/entrypoint.sh` runs exactly as in the image: configured only by environment, with the
console scripts on PATH, from a working directory outside the repository. It migrates a fresh
Postgres database (or the embedded store), serves until /health is ok, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from server_stub.db.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
ENTRYPOINT = PACKAGING / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
SECRET = "container-test-secret-" + "k" * 32


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def container_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Only what the image sets plus the given settings: nothing leaks in from the test's environment."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "WEBHOST_ENV": "production",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    env.update(settings)
    return env


class Entrypoint:
    """`packaging/entrypoint.sh` as a child process, its output kept in files."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.workdir = tmp_path / "workdir"
        self.workdir.mkdir(exist_ok=True)
        self.stdout, self.stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen([str(ENTRYPOINT)], env=env, cwd=self.workdir,
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_healthy(self, port: int, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the entry point exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if response.status_code == 200 and response.json()["status"] == "ok":
                    body: dict[str, Any] = response.json()
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/health never became ok:\n{self.output()}")

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the server ignored SIGTERM for {timeout} s:\n{self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def run_entrypoint(tmp_path: Path) -> Iterator[Any]:
    started: list[Entrypoint] = []

    def start(env: dict[str, str]) -> Entrypoint:
        entry = Entrypoint(tmp_path, env)
        started.append(entry)
        return entry

    yield start
    for entry in started:
        entry.kill()


def check_serves_and_stops(entry: Entrypoint, port: int) -> dict[str, Any]:
    health = entry.wait_healthy(port)
    # The server listens on every interface, as in a container.
    connections = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert "0.0.0.0:" in connections or "*:" in connections, connections
    # The admin page works with its bundled assets (found outside the source tree's working directory).
    login = httpx.get(f"http://127.0.0.1:{port}/admin/login", timeout=5)
    assert login.status_code == 200 and "Sign in" in login.text
    assert httpx.get(f"http://127.0.0.1:{port}/admin/leaflet/leaflet.js", timeout=5).status_code == 200
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM (or 0) is clean.
    assert entry.terminate() in (0, -signal.SIGTERM), entry.output()
    # The graceful shutdown ran in the server itself (exec: no shell in between swallowed the signal).
    assert "Application shutdown complete" in entry.output() and "Finished server process" in entry.output()
    return health


@pytest.mark.postgres
def test_entrypoint_migrates_a_fresh_postgres_then_serves_and_stops_on_sigterm(tmp_path: Path, pg_url: str,
                                                                               run_entrypoint: Any) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone() == (None,)
    port = free_port()
    entry = run_entrypoint(container_env(tmp_path, DATABASE_URL=pg_url, WEBHOST_SECRET_KEY=SECRET, PORT=str(port)))
    health = check_serves_and_stops(entry, port)
    assert health["database"]["dialect"] == "postgres"
    assert health["extensions"]["postgis"]
    assert health["redis"] == "not configured"
    assert "applied: " in entry.output()  # `webhost-server migrate` ran first and said what it applied
    with psycopg.connect(pg_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(m.version for m in MIGRATIONS)


def test_entrypoint_uses_the_embedded_store_when_no_database_url_is_given(tmp_path: Path,
                                                                          run_entrypoint: Any) -> None:
    port = free_port()
    entry = run_entrypoint(container_env(tmp_path, WEBHOST_SECRET_KEY=SECRET, PORT=str(port)))
    health = check_serves_and_stops(entry, port)
    assert health["database"]["dialect"] == "sqlite"
    store = tmp_path / "data" / "webhost-fleet" / "server" / "fleet-server.sqlite"
    assert store.exists()
    # Production never writes a generated secret beside the store: the key came from the environment.
    assert not (store.parent / "secret_key").exists()


def test_entrypoint_refuses_to_start_without_a_secret_and_touches_nothing(tmp_path: Path,
                                                                          run_entrypoint: Any) -> None:
    database = tmp_path / "never.sqlite"
    entry = run_entrypoint(container_env(tmp_path, DATABASE_URL=f"sqlite:///{database}", PORT=str(free_port())))
    assert entry.process.wait(60) == 2
    assert "WEBHOST_SECRET_KEY is required" in entry.output()
    assert not database.exists()  # it stopped before migrating


# -- static checks of the image recipe -------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (PACKAGING / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_migrate_before_serve() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    runtime = stages[-1]
    instructions = [name for name, _ in runtime]
    args = {name: value for name, value in runtime}
    # The runtime stage copies the built venv from the builder instead of building itself.
    assert any(name == "COPY" and value.startswith("--from=") for name, value in runtime)
    assert "pip install" not in " ".join(value for _, value in runtime)
    assert any("libsqlite3-mod-spatialite" in value for name, value in runtime if name == "RUN")
    # Non-root, and it stays so until the entry point runs.
    users = [value for name, value in runtime if name == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert instructions.index("USER") < instructions.index("ENTRYPOINT")
    # The health check asks /health with Python's urllib on the configured port.
    healthcheck = args["HEALTHCHECK"]
    assert "/health" in healthcheck and "urllib" in healthcheck and "PORT" in healthcheck
    # The exposed port is the default PORT.
    port = re.search(r"\bPORT=(\d+)", " ".join(value for name, value in runtime if name == "ENV"))
    assert port is not None and args["EXPOSE"].split("/")[0] == port.group(1)
    # The entry point is our script, copied from packaging/entrypoint.sh.
    entry = json.loads(args["ENTRYPOINT"])[0]
    assert any(name == "COPY" and value.split()[-1] == entry and "packaging/entrypoint.sh" in value
               for name, value in runtime)
    # Everything the builder copies exists (so the recipe can build from a fresh clone).
    for name, value in stages[0]:
        if name == "COPY" and not value.startswith("--from="):
            for source in value.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: missing"


def test_entrypoint_migrates_then_execs_the_server_on_all_interfaces() -> None:
    commands = [line.strip() for line in ENTRYPOINT.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    migrate = next(i for i, line in enumerate(commands) if line.startswith("webhost-server migrate"))
    serve = next(i for i, line in enumerate(commands) if line.startswith("exec webhost-server serve"))
    assert migrate < serve
    assert "--host 0.0.0.0" in commands[serve]
    assert "set -eu" in commands  # a failed migration stops the container instead of serving
    assert os.access(ENTRYPOINT, os.X_OK)


def test_compose_runs_timescaledb_ha_redis_and_the_server_after_their_healthchecks() -> None:
    compose = yaml.safe_load((PACKAGING / "docker-compose.yml").read_text())
    services = compose["services"]
    db = next(s for s in services.values() if str(s.get("image", "")).startswith("timescale/timescaledb-ha"))
    redis = next(s for s in services.values() if str(s.get("image", "")).startswith("redis"))
    assert "healthcheck" in db and "healthcheck" in redis
    server = services["server"]
    assert server["build"]["dockerfile"] == "packaging/Dockerfile"
    assert (PACKAGING / server["build"]["context"]).resolve() == ROOT
    assert {condition["condition"] for condition in server["depends_on"].values()} == {"service_healthy"}
    env = server["environment"]
    assert {"DATABASE_URL", "REDIS_URL", "WEBHOST_SECRET_KEY", "PORT"} <= set(env)
    assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")
    assert str(env["PORT"]) in " ".join(str(p) for p in server["ports"])


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for package in ("server_stub", "sync", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names
            and name not in ("server_stub", "sync", "storage")}


def test_the_server_dependency_group_covers_every_import_of_the_server_packages() -> None:
    """The image installs only the `server` group: a missing entry would be an ImportError in production."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["server"]
    names = {re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in declared}
    locked = {
        line.split("==", 1)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements" / "server.txt").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    providers = importlib.metadata.packages_distributions()
    indirect = {"numpy"}  # shapely's own dependency
    for module in sorted(_third_party_imports() - indirect):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists & names, f"{module} (from {sorted(dists)}) is imported but not in the server group"
        assert dists & locked, f"{module} (from {sorted(dists)}) is missing from requirements/server.txt"


def test_the_image_installs_the_server_group_from_the_lock_with_hashes() -> None:
    """No open ranges in the image: pip gets the exported lock, checks hashes and resolves nothing itself."""
    builder = dockerfile_stages()[0]
    installs = [value for instruction, value in builder if instruction == "RUN" and "pip install" in value]
    assert any("--require-hashes" in value and "--no-deps" in value and "server-requirements.txt" in value
               for value in installs), installs
    copied = [value for instruction, value in builder if instruction == "COPY"]
    assert any(value.startswith("requirements/server.txt") for value in copied), copied


def test_the_package_ships_the_admin_templates_and_assets() -> None:
    """pip install (non-editable, as in the image) copies package data only where pyproject says so."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data.get("server_stub.admin", [])
    admin = ROOT / "server_stub" / "admin"
    files = [p for p in (admin / "templates").iterdir()] + [p for p in (admin / "static").iterdir()]
    assert files
    for path in files:
        relative = path.relative_to(admin)
        assert any(relative.match(pattern) for pattern in patterns), f"{relative} would be missing from the image"
