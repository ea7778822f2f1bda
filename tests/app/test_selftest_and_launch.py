"""`webhost-desktop --self-test` in a subprocess, the command-line options, and opening a profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.accounts import load_refresh_token, save_refresh_token, sign_in
from app.dispatcher import DispatcherWindow
from app.field import FieldWindow
from app.launch import open_window
from app.main import build_parser
from app.profiles import ProfileSettings
from server_stub.testing import PASSWORD, LiveServer, provision_tenant, settings_for

from .conftest import MemoryKeyring

ROOT = Path(__file__).resolve().parents[2]


def test_self_test_passes_headless_and_prints_one_line_per_check(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)  # the self-test must go headless by itself
    result = subprocess.run([sys.executable, "-m", "app.main", "--self-test"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")]
    names = [line[5:].split(":")[0] for line in lines]
    assert names == ["mod_spatialite loads", "Leaflet assets present", "offline tiles present", "store is writable",
                     "keyring backend", "map page loads without network"]
    assert not [line for line in lines if line.startswith("FAIL")]
    assert lines[-1].endswith("0 network requests")


def test_the_command_line_options_are_the_documented_ones() -> None:
    options = {a.dest for a in build_parser()._actions} - {"help"}
    assert options == {"profile", "server", "field", "self_test"}
    args = build_parser().parse_args(["--profile", "/tmp/p", "--server", "http://s", "--field"])
    assert (args.profile, args.server, args.field, args.self_test) == ("/tmp/p", "http://s", True, False)


def test_a_local_profile_opens_the_dispatcher_with_the_demo_fleet(qtbot: QtBot, tmp_path: Path) -> None:
    window = open_window(str(tmp_path / "local"), None, False)
    assert isinstance(window, DispatcherWindow)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.collection_tabs["vehicles"].model.rowCount() == 13)
    assert window.status.state.text() == "Offline (no server configured)"
    assert (tmp_path / "local" / "fleet.sqlite").exists()
    window.close()
    window.ctx.close()


def test_field_mode_opens_read_only(qtbot: QtBot, tmp_path: Path) -> None:
    window = open_window(str(tmp_path / "field"), None, True)
    assert isinstance(window, FieldWindow)
    qtbot.addWidget(window)
    assert window.ctx.read_only
    window.close()
    window.ctx.close()




def test_a_remembered_sign_in_starts_syncing_without_asking(qtbot: QtBot, tmp_path: Path,
                                                            memory_keyring: MemoryKeyring) -> None:
    with LiveServer(settings_for(f"sqlite:///{tmp_path / 'server.sqlite'}")) as live:
        tenant = provision_tenant(live.settings, "Remembered")
        email = tenant.emails["dispatcher"]
        credentials = sign_in(live.url, email, PASSWORD)
        assert credentials.refresh_token and save_refresh_token(live.url, email, credentials.refresh_token)
        profile = tmp_path / "profile"
        ProfileSettings(server_url=live.url, email=email, tenant_id=tenant.id, role="dispatcher").save(profile)
        window = open_window(str(profile), None, False)
        assert isinstance(window, DispatcherWindow) and window.sync is not None
        qtbot.addWidget(window)
        # The first connection has no access token: the server refuses it, the sync thread
        # refreshes with the keyring's token, and the app comes online by itself.
        qtbot.waitUntil(lambda: window.status.state.text().startswith("Online"), timeout=20_000)
        assert window.collection_tabs["vehicles"].model.rowCount() == 0  # a server profile gets no demo data
        window.sync.stop()
        window.close()
        window.ctx.close()


def test_a_rejected_sign_in_asks_for_the_password_and_syncs_again(qtbot: QtBot, tmp_path: Path,
                                                                  memory_keyring: MemoryKeyring) -> None:
    with LiveServer(settings_for(f"sqlite:///{tmp_path / 'server.sqlite'}")) as live:
        tenant = provision_tenant(live.settings, "Revoked")
        email = tenant.emails["dispatcher"]
        assert save_refresh_token(live.url, email, "whr_revoked-long-ago")
        profile = tmp_path / "profile"
        ProfileSettings(server_url=live.url, email=email, tenant_id=tenant.id, role="dispatcher").save(profile)
        window = open_window(str(profile), None, False)
        assert isinstance(window, DispatcherWindow)
        qtbot.addWidget(window)
        keeper = window.session_keeper
        qtbot.waitUntil(lambda: getattr(keeper, "dialog", None) is not None, timeout=20_000)
        assert window.status.state.text().startswith("Sign-in required")
        dialog = keeper.dialog  # type: ignore[union-attr]
        assert dialog.email.text() == email and dialog.server.isReadOnly()
        dialog.password.setText(PASSWORD)
        dialog.submit()
        qtbot.waitUntil(lambda: window.status.state.text().startswith("Online"), timeout=20_000)
        assert load_refresh_token(live.url, email) not in (None, "whr_revoked-long-ago")
        assert window.sync is not None
        window.sync.stop()
        window.close()
        window.ctx.close()


def test_a_scripted_start_signs_in_with_the_given_password(qtbot: QtBot, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with LiveServer(settings_for(f"sqlite:///{tmp_path / 'server.sqlite'}")) as live:
        tenant = provision_tenant(live.settings, "Scripted")
        monkeypatch.setenv("WEBHOST_EMAIL", tenant.emails["dispatcher"])
        monkeypatch.setenv("WEBHOST_PASSWORD", PASSWORD)
        window = open_window(str(tmp_path / "profile"), live.url, False)
        assert isinstance(window, DispatcherWindow)
        qtbot.addWidget(window)
        qtbot.waitUntil(lambda: window.status.state.text().startswith("Online"), timeout=20_000)
        settings = ProfileSettings.load(tmp_path / "profile")
        assert (settings.server_url, settings.tenant_id, settings.role) == (live.url, tenant.id, "dispatcher")
        assert window.sync is not None
        window.sync.stop()
        window.close()
        window.ctx.close()
