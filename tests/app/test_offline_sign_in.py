"""Offline sign-in on a vehicle PC with no secure keyring: a profile that signed in once opens with the
server down (checked against the profile's argon2 verifier, never a stored password), read-only with
sync paused; a wrong password or a user who never signed in here is refused with a plain reason."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytestqt.qtbot import QtBot

from app.accounts import LoginDialog, sign_in
from app.field import FieldWindow
from app.launch import OFFLINE_TEXT, open_window
from app.offline_sign_in import VERIFIER_FILE, candidate_profiles, load_verifier
from server_stub import accounts
from server_stub.db import open_database
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for
from storage.positions import Fix

from .conftest import InsecureKeyring

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(settings_for(f"sqlite:///{tmp_path / 'server.sqlite'}")) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, "Offline Crew")


def closed_port_url() -> str:
    """A loopback address nothing listens on: a server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def create(live: LiveServer, token: str, collection: str, attributes: dict[str, Any]) -> str:
    """What a dispatcher does through the REST API."""
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as http:
        response = http.post(f"/api/v1/{collection}", json={"data": {"type": collection, "attributes": attributes}})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def open_field(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, email: str, password: str,
               server: str | None) -> FieldWindow:
    """`webhost-desktop --field` with the password typed in (the scripted start fills the dialog)."""
    monkeypatch.setenv("WEBHOST_EMAIL", email)
    monkeypatch.setenv("WEBHOST_PASSWORD", password)
    window = open_window(None, server, True)
    assert isinstance(window, FieldWindow)
    qtbot.addWidget(window)
    return window


def close(window: FieldWindow) -> None:
    if window.sync is not None:
        window.sync.stop()
        assert not window.sync.running  # even when closed while still connecting
    window.close()
    window.ctx.close()


def try_offline(qtbot: QtBot, server: str, email: str, password: str) -> LoginDialog:
    dialog = LoginDialog(server, email, profiles=lambda s, e: candidate_profiles(s, e), allow_offline=True)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.password.setText(password)
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.credentials is not None or dialog.error.text() not in ("", "Signing in…"),
                    timeout=20_000)
    return dialog


def test_a_profile_that_signed_in_once_opens_offline_with_sync_paused(
        qtbot: QtBot, live: LiveServer, tenant: Tenant, no_secure_keyring: InsecureKeyring,
        monkeypatch: pytest.MonkeyPatch) -> None:
    email = tenant.emails["field"]
    # The dispatcher gives this user a driver record and a vehicle to drive.
    driver = create(live, tenant.tokens["admin"], "drivers", {"name": "Aino", "email": email})
    van = create(live, tenant.tokens["admin"], "vehicles", {"name": "Van 7", "device_id": "van-7",
                                                           "driver_id": driver})
    online = open_field(qtbot, monkeypatch, email, PASSWORD, live.url)
    qtbot.waitUntil(lambda: online.status.state.text().startswith("Online"), timeout=20_000)
    qtbot.waitUntil(lambda: online.vehicle.currentText() == "Van 7", timeout=20_000)  # assigned, by sync
    profile = online.ctx.profile_dir
    stored = (profile / VERIFIER_FILE).read_text()
    assert json.loads(stored)["verifier"].startswith("$argon2id$")
    assert PASSWORD not in stored and PASSWORD not in (profile / "settings.json").read_text()
    assert no_secure_keyring.values == {}  # a plain-text keyring is never trusted with the token
    close(online)

    live.stop()  # the server goes down; the vehicle PC starts again
    offline = open_field(qtbot, monkeypatch, email, PASSWORD, None)
    assert offline.ctx.profile_dir == profile and offline.sync is None
    assert offline.ctx.read_only
    assert offline.status.state.text() == OFFLINE_TEXT == "Sync paused — signed in offline"
    assert "Fleet data is read-only" in offline.status.state.toolTip()
    assert offline.status.sign_in.isVisibleTo(offline)
    # Read and record: the assigned vehicle is there, and fixes wait in the outbox.
    qtbot.waitUntil(lambda: offline.vehicle_note.text() == "Assigned to you: Van 7")
    now = time.time()
    fixes = [Fix("van-7", now - 30 + k, 60.17 + k * 1e-4, 24.94, van, 30.0) for k in range(3)]
    assert offline.start_recording(fixes)
    qtbot.waitUntil(lambda: offline.recording_state.text() == "Source finished", timeout=20_000)
    qtbot.waitUntil(lambda: offline.outbox.text() == "Outbox: 3 waiting · 0 uploaded")

    # Back online: the status bar's button signs in, sync starts and the verifier is renewed.
    live.start()
    offline.status.sign_in.click()
    keeper = offline.session_keeper
    dialog = getattr(keeper, "dialog", None)
    assert isinstance(dialog, LoginDialog) and dialog.server.isReadOnly() and dialog.email.text() == email
    dialog.password.setText(PASSWORD)
    dialog.submit()
    qtbot.waitUntil(lambda: offline.status.state.text().startswith("Online"), timeout=20_000)
    qtbot.waitUntil(lambda: offline.outbox.text() == "Outbox: 0 waiting · 3 uploaded", timeout=20_000)
    assert not offline.status.sign_in.isVisibleTo(offline)
    assert (profile / VERIFIER_FILE).read_text() != stored  # a new salt: written again
    close(offline)


def test_a_wrong_password_is_refused_offline_and_a_changed_password_replaces_the_verifier(
        qtbot: QtBot, live: LiveServer, tenant: Tenant, no_secure_keyring: InsecureKeyring,
        monkeypatch: pytest.MonkeyPatch) -> None:
    email = tenant.emails["field"]
    window = open_field(qtbot, monkeypatch, email, PASSWORD, live.url)
    profile = window.ctx.profile_dir
    close(window)

    # The password is changed on the server; the old one is refused online and stops opening
    # the profile offline at once.
    user_id = sign_in(live.url, email, PASSWORD).user_id

    async def change_password() -> None:
        db = await open_database(live.settings.database_url)
        try:
            await accounts.reset_password(db, user_id, NEW_PASSWORD)
        finally:
            await db.close()

    asyncio.run(change_password())
    refused = try_offline(qtbot, live.url, email, PASSWORD)
    assert refused.credentials is None and load_verifier(profile) is None

    window = open_field(qtbot, monkeypatch, email, NEW_PASSWORD, live.url)  # the new password, online
    assert window.ctx.profile_dir == profile and load_verifier(profile) is not None
    close(window)
    live.stop()

    wrong = try_offline(qtbot, live.url, email, PASSWORD)
    assert wrong.credentials is None and wrong.isVisible()
    assert wrong.error.text() == (
        f"The server {live.url} cannot be reached ([Errno 111] Connection refused). Wrong password: it does not "
        "match the one used at your last online sign-in on this computer, so the profile stays closed.")
    right = try_offline(qtbot, live.url, email, NEW_PASSWORD)
    assert right.offline_profile is not None and right.offline_profile.profile_dir == profile
    assert right.credentials is not None and right.credentials.access_token == ""


def test_a_user_who_never_signed_in_here_cannot_open_offline(qtbot: QtBot,
                                                             no_secure_keyring: InsecureKeyring) -> None:
    server = closed_port_url()
    dialog = try_offline(qtbot, server, "new.driver@example.fi", PASSWORD)
    assert dialog.credentials is None and dialog.offline_profile is None
    assert dialog.error.text() == (
        f"The server {server} cannot be reached ([Errno 111] Connection refused). new.driver@example.fi has "
        "never signed in to this server on this computer, so there is no profile to open offline: connect to "
        "the network and sign in once.")
