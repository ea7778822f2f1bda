"""Signing in against a real server, the keyring (or its absence), and per-user profiles."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backends import fail
from pytestqt.qtbot import QtBot

from app.accounts import (
    NO_KEYRING_TEXT,
    Credentials,
    LoginDialog,
    SessionTokens,
    SignInFailed,
    keyring_status,
    load_refresh_token,
    save_refresh_token,
    sign_in,
    token_payload,
)
from app.profiles import ProfileSettings, profile_dir_for
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for

from .conftest import MemoryKeyring


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('server') / 'fleet-server.sqlite'}"
    with LiveServer(settings_for(url)) as server:
        yield server


@pytest.fixture(scope="module")
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, "Login Tests")


def test_no_keyring_backend_is_said_plainly_and_nothing_is_stored(no_keyring: None) -> None:
    status = keyring_status()
    assert not status.secure
    assert status.describe().endswith("passwords asked each start")
    assert save_refresh_token("http://x", "a@b.c", "secret") is False
    assert load_refresh_token("http://x", "a@b.c") is None


def test_a_secure_keyring_keeps_the_refresh_token(memory_keyring: MemoryKeyring) -> None:
    assert keyring_status().secure
    assert save_refresh_token("http://x/", "a@b.c", "secret")
    assert load_refresh_token("http://x", "a@b.c") == "secret"
    assert memory_keyring.values == {("webhost-fleet", "http://x|a@b.c"): "secret"}


def test_sign_in_returns_the_tenant_and_role_from_the_token(live: LiveServer, tenant: Tenant) -> None:
    credentials = sign_in(live.url, tenant.emails["dispatcher"], PASSWORD)
    assert credentials.tenant_id == tenant.id
    assert credentials.role == "dispatcher" and credentials.refresh_token
    assert token_payload(credentials.access_token)["cid"] == tenant.id
    with pytest.raises(SignInFailed):
        sign_in(live.url, tenant.emails["dispatcher"], "wrong password")
    with pytest.raises(SignInFailed, match="cannot reach"):
        sign_in("http://127.0.0.1:9", "a@b.c", "x")


def test_login_dialog_signs_in_on_a_worker_and_warns_without_a_keyring(
        qtbot: QtBot, live: LiveServer, tenant: Tenant, no_keyring: None) -> None:
    dialog = LoginDialog(live.url)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.keyring_note.text() == NO_KEYRING_TEXT
    qtbot.keyClicks(dialog.email, tenant.emails["dispatcher"])
    qtbot.keyClicks(dialog.password, "not it")
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.error.text() not in ("", "Signing in…"), timeout=10_000)
    assert dialog.isVisible() and dialog.credentials is None
    dialog.password.setText(PASSWORD)
    with qtbot.waitSignal(dialog.signed_in, timeout=10_000) as signed:
        dialog.submit()
    credentials: Any = signed.args[0] if signed.args else None
    assert isinstance(credentials, Credentials) and credentials.tenant_id == tenant.id
    assert dialog.password.text() == "" and dialog.remembered is False


def test_login_dialog_keeps_the_sign_in_in_a_secure_keyring(qtbot: QtBot, live: LiveServer, tenant: Tenant,
                                                            memory_keyring: MemoryKeyring) -> None:
    dialog = LoginDialog(live.url, tenant.emails["field"])
    qtbot.addWidget(dialog)
    assert "system keyring" in dialog.keyring_note.text()
    dialog.password.setText(PASSWORD)
    with qtbot.waitSignal(dialog.signed_in, timeout=10_000):
        dialog.submit()
    assert dialog.remembered
    assert load_refresh_token(live.url, tenant.emails["field"]) == dialog.credentials.refresh_token  # type: ignore[union-attr]


def test_login_dialog_checks_the_form_before_asking_the_server(qtbot: QtBot) -> None:
    dialog = LoginDialog()
    qtbot.addWidget(dialog)
    dialog.submit()
    assert dialog.error.text() == "Please fill in: server, email, password"
    dialog.server.setText("fleet.example.com")
    dialog.email.setText("a@b.c")
    dialog.password.setText("x")
    dialog.submit()
    assert dialog.error.text() == "The server address must start with http:// or https://"


def test_session_tokens_refresh_once_for_concurrent_callers(live: LiveServer, tenant: Tenant,
                                                            memory_keyring: MemoryKeyring) -> None:
    credentials = sign_in(live.url, tenant.emails["admin"], PASSWORD)
    tokens = SessionTokens(live.url, tenant.emails["admin"], credentials, remember=True)

    async def both() -> list[bool]:
        return list(await asyncio.gather(tokens.refresh(), tokens.refresh()))

    assert asyncio.run(both()) == [True, True]
    assert tokens.generation == 1  # one refresh served both callers
    # The rotated refresh token replaced the old one in the keyring, and still works.
    stored = load_refresh_token(live.url, tenant.emails["admin"])
    assert stored and stored != credentials.refresh_token
    assert asyncio.run(tokens.refresh()) is True


def test_profiles_are_one_per_server_tenant_and_user(tmp_path: Path) -> None:
    a = profile_dir_for("https://fleet.example.com", "tenant-1", "ann@x.fi")
    b = profile_dir_for("https://fleet.example.com", "tenant-1", "bob@x.fi")
    c = profile_dir_for("https://other.example.com", "tenant-1", "ann@x.fi")
    assert len({a, b, c}) == 3
    settings = ProfileSettings(server_url="https://fleet.example.com", email="ann@x.fi", tenant_id="tenant-1",
                               role="field")
    settings.save(tmp_path)
    assert ProfileSettings.load(tmp_path) == settings and settings.read_only
    text = (tmp_path / "settings.json").read_text()
    assert "token" not in text and "password" not in text
