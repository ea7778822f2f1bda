"""Profiles: one local store per (server, tenant, user), under the platformdirs data folder, plus a
small settings file beside it. Secrets never go here (see app/accounts.py); the offline sign-in
verifier has its own file beside them (app/offline_sign_in.py)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from storage import default_store_path
from storage.store import APP_NAME

SETTINGS_FILE = "settings.json"
LAST_PROFILE_FILE = "last_profile"


@dataclass
class ProfileSettings:
    server_url: str | None = None
    email: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    role: str | None = None
    online_tiles: bool = False  # opt-in: OpenStreetMap's tile servers instead of the offline tiles

    @classmethod
    def load(cls, profile_dir: Path) -> ProfileSettings:
        path = profile_dir / SETTINGS_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known}) if isinstance(raw, dict) else cls()

    def save(self, profile_dir: Path) -> None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        tmp = profile_dir / (SETTINGS_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, profile_dir / SETTINGS_FILE)

    @property
    def read_only(self) -> bool:
        return self.role == "field"


def profile_name(server_url: str, tenant_id: str, email: str) -> str:
    """A stable name for (server, tenant, user), readable in a file manager."""
    parts = urlsplit(server_url)
    host = parts.netloc or parts.path or "server"
    return f"{host}-{tenant_id[:8]}-{email}".lower()


def profile_dir_for(server_url: str, tenant_id: str, email: str) -> Path:
    return default_store_path(profile_name(server_url, tenant_id, email)).parent


def profiles_root() -> Path:
    return default_store_path("local").parent.parent


def known_profiles() -> list[Path]:
    """Every profile folder under the data folder (not those opened with --profile elsewhere)."""
    try:
        return sorted(p for p in profiles_root().iterdir() if p.is_dir())
    except OSError:
        return []


def local_profile_dir() -> Path:
    """The profile used with no server at all (a local-only fleet)."""
    return default_store_path("local").parent


def _config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME))


def remember_last_profile(profile_dir: Path) -> None:
    config = _config_dir()
    config.mkdir(parents=True, exist_ok=True)
    (config / LAST_PROFILE_FILE).write_text(str(profile_dir))


def last_profile() -> Path | None:
    try:
        text = (_config_dir() / LAST_PROFILE_FILE).read_text().strip()
    except OSError:
        return None
    path = Path(text)
    return path if text and path.is_dir() else None


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME))
