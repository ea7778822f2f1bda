"""Sign-in throttling through a real server: per account and per address, shared over real Redis,
and X-Forwarded-For believed only from WEBHOST_TRUSTED_PROXIES.

Every request comes from 127.0.0.1; where a test needs other client addresses it names them in
X-Forwarded-For through a trusted proxy, with fresh random addresses, because Redis (and so the
per-address count) outlives a test run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_stub.config import Settings
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for

from .test_fanout import REDIS_URL, UNREACHABLE_REDIS_URL, needs_redis

LOOPBACK = ("127.0.0.1/32",)


def sqlite_settings(tmp_path: Path, name: str = "server", **overrides: Any) -> Settings:
    return settings_for(f"sqlite:///{tmp_path / name / 'fleet-server.sqlite'}", **overrides)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(sqlite_settings(tmp_path)) as live:
        yield live


def random_address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{1 + secrets.randbelow(250)}"


def sign_in(server: LiveServer, email: str, password: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return httpx.post(f"{server.url}/api/v1/auth/token", json={"email": email, "password": password},
                      headers=headers, timeout=15)


def assert_throttled(response: httpx.Response, window: float = 300) -> None:
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["retry-after"]) <= window
    assert response.json()["errors"][0]["title"] == "too many attempts"


@pytest.mark.parametrize("redis_url", [None, UNREACHABLE_REDIS_URL], ids=["in-memory", "redis-down"])
def test_one_address_trying_many_accounts_is_throttled(tmp_path: Path, redis_url: str | None) -> None:
    # Password spraying: one wrong password each for many accounts used to pass unthrottled.
    with LiveServer(sqlite_settings(tmp_path, redis_url=redis_url)) as server:
        tenant = provision_tenant(server.settings)
        for n in range(server.settings.login_max_failures_per_ip):
            assert sign_in(server, f"sprayed-{n}@example.com", "Winter2024!").status_code == 401
        # Even a real account with its right password waits now, from this address.
        assert_throttled(sign_in(server, tenant.emails["dispatcher"], PASSWORD))


def test_one_account_tried_from_many_addresses_is_throttled(tmp_path: Path) -> None:
    with LiveServer(sqlite_settings(tmp_path, trusted_proxies=LOOPBACK)) as server:
        tenant = provision_tenant(server.settings)
        email = tenant.emails["admin"]
        for _ in range(server.settings.login_max_failures_per_account):
            assert sign_in(server, email, "a guess", random_address()).status_code == 401
        assert_throttled(sign_in(server, email, PASSWORD, random_address()))
        # Another account from a fresh address is not affected.
        assert sign_in(server, tenant.emails["field"], PASSWORD, random_address()).status_code == 200


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(server: LiveServer) -> None:
    # Loopback used to be trusted by default, so a local caller could pick a new address per guess.
    tenant = provision_tenant(server.settings)
    email = tenant.emails["dispatcher"]
    for _ in range(server.settings.login_max_failures):
        assert sign_in(server, email, "a guess", random_address()).status_code == 401
    assert_throttled(sign_in(server, email, "a guess", random_address()))


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    with LiveServer(sqlite_settings(tmp_path, trusted_proxies=LOOPBACK)) as server:
        tenant = provision_tenant(server.settings)
        email = tenant.emails["dispatcher"]
        attacker, colleague = random_address(), random_address()
        for _ in range(server.settings.login_max_failures):
            assert sign_in(server, email, "a guess", attacker).status_code == 401
        assert_throttled(sign_in(server, email, PASSWORD, attacker))
        # The proxy appends the address it saw last; what the client wrote before it is not believed.
        assert_throttled(sign_in(server, email, PASSWORD, f"{colleague}, {attacker}"))
        assert sign_in(server, email, PASSWORD, f"{attacker}, {colleague}").status_code == 200


@needs_redis
def test_failures_counted_on_one_instance_throttle_the_others_through_redis(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path, redis_url=REDIS_URL, trusted_proxies=LOOPBACK)
    with LiveServer(settings) as one, LiveServer(settings) as two:
        tenant: Tenant = provision_tenant(settings)
        email, address = tenant.emails["dispatcher"], random_address()
        for n in range(settings.login_max_failures):
            assert sign_in((one, two)[n % 2], email, "a guess", address).status_code == 401
        assert_throttled(sign_in(two, email, PASSWORD, address))
        assert_throttled(sign_in(one, email, PASSWORD, address))
        # Spraying is counted across instances as well.
        sprayer = random_address()
        for n in range(settings.login_max_failures_per_ip):
            assert sign_in((one, two)[n % 2], f"nobody-{n}@example.com", "x", sprayer).status_code == 401
        assert_throttled(sign_in(one, tenant.emails["field"], PASSWORD, sprayer))
