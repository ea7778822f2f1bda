"""Test doubles that ship with the server: a real uvicorn server on an ephemeral loopback port,
and a provisioned tenant with one user per role."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import uvicorn

from server_stub import accounts
from server_stub.app import create_app
from server_stub.auth import issue_access_token
from server_stub.cli import uvicorn_log_config, uvicorn_proxy_options
from server_stub.config import DEVELOPMENT, Settings
from server_stub.db import open_database
from server_stub.db.migrations import migrate

PASSWORD = "correct horse battery"


class LiveServer:
    """A real uvicorn server in a background thread: `with LiveServer(settings) as server: ...`.

    restart() brings it back on the same port, so clients reconnect to the same URL."""

    def __init__(self, settings: Settings, *, port: int = 0) -> None:
        self.settings = settings
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = create_app(self.settings)
        # Logging and proxy handling as `webhost-server serve` has them: tokens scrubbed from the
        # logs, X-Forwarded-For believed only from settings.trusted_proxies.
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                ws_max_size=self.settings.max_message_bytes * 2, ws_ping_interval=None,
                                log_config=uvicorn_log_config(), **uvicorn_proxy_options(self.settings))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Tenant:
    id: str
    emails: dict[str, str]  # role -> email
    tokens: dict[str, str]  # role -> access token


async def _provision(settings: Settings, name: str) -> Tenant:
    db = await open_database(settings.database_url, timescale=settings.timescale)
    try:
        await migrate(db)
        tenant = await accounts.create_tenant(db, name, "pro")
        emails, tokens = {}, {}
        for role in ("admin", "dispatcher", "field"):
            email = f"{role}-{secrets.token_hex(4)}@{name.lower().replace(' ', '-')}.example"
            user = await accounts.create_user(db, email, PASSWORD, role, tenant.id)
            emails[role] = email
            tokens[role], _ = issue_access_token(settings, user, ttl=3600)
        return Tenant(tenant.id, emails, tokens)
    finally:
        await db.close()


def provision_tenant(settings: Settings, name: str = "Acme Logistics") -> Tenant:
    """A tenant with an admin, a dispatcher and a field user, and an access token for each."""
    return asyncio.run(_provision(settings, name))


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings of a test server: development mode, said explicitly, with a fixed secret."""
    settings = Settings(database_url=database_url, secret_key="test-secret-" + "s" * 40, environment=DEVELOPMENT)
    return replace(settings, **overrides)
