"""Opening a profile while the server cannot be reached: the password is checked against an argon2
verifier that the profile keeps from its last online sign-in (never the password, never anything
it could be recovered from). Such a session syncs nothing until the user signs in online."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.profiles import ProfileSettings, known_profiles

log = logging.getLogger(__name__)

VERIFIER_FILE = "sign_in_verifier.json"
_hasher = PasswordHasher()  # argon2id with the library's defaults (64 MiB, 3 passes)


class OfflineSignInFailed(Exception):
    """No profile could be opened offline; the message says why and what to do."""


@dataclass(frozen=True)
class StoredVerifier:
    server_url: str
    email: str
    verifier: str
    saved_at: float


@dataclass(frozen=True)
class OfflineProfile:
    """A profile opened with its verifier: where it is and who it belongs to."""

    profile_dir: Path
    settings: ProfileSettings


def make_verifier(password: str) -> str:
    """An argon2id hash of the password (salted, slow on purpose). Run it off the UI thread."""
    return _hasher.hash(password)


def matches(verifier: str, password: str) -> bool:
    try:
        return _hasher.verify(verifier, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _same_server(a: str | None, b: str) -> bool:
    return (a or "").rstrip("/") == b.rstrip("/")


def _same_email(a: str | None, b: str) -> bool:
    return (a or "").strip().lower() == b.strip().lower()


def save_verifier(profile_dir: Path, server_url: str, email: str, verifier: str) -> None:
    """Write (or replace) the profile's verifier, readable by this user only."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    payload = {"server_url": server_url.rstrip("/"), "email": email, "verifier": verifier, "saved_at": time.time()}
    tmp = profile_dir / (VERIFIER_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(payload, out)
    os.replace(tmp, profile_dir / VERIFIER_FILE)


def load_verifier(profile_dir: Path) -> StoredVerifier | None:
    try:
        raw = json.loads((profile_dir / VERIFIER_FILE).read_text())
        return StoredVerifier(str(raw["server_url"]), str(raw["email"]), str(raw["verifier"]),
                              float(raw.get("saved_at") or 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget_verifier(profile_dir: Path) -> None:
    (profile_dir / VERIFIER_FILE).unlink(missing_ok=True)


def candidate_profiles(server_url: str, email: str, preferred: Path | None = None) -> list[Path]:
    """Profiles of this server and user that hold a verifier: `preferred` (an explicit --profile)
    alone when given, else every profile under the data folder (one per tenant), newest first."""
    folders = [preferred] if preferred is not None else known_profiles()
    found = []
    for folder in folders:
        stored = load_verifier(folder)
        if stored is not None and _same_server(stored.server_url, server_url) and _same_email(stored.email, email):
            found.append((stored.saved_at, folder))
    return [folder for _saved, folder in sorted(found, key=lambda item: item[0], reverse=True)]


def open_offline(server_url: str, email: str, password: str, candidates: list[Path], reason: str) -> OfflineProfile:
    """The profile whose verifier the password matches; OfflineSignInFailed with a plain reason
    otherwise. `reason` says why the server was not asked (it could not be reached)."""
    if not candidates:
        raise OfflineSignInFailed(
            f"{reason}. {email} has never signed in to this server on this computer, so there is no "
            "profile to open offline: connect to the network and sign in once.")
    for folder in candidates:
        stored = load_verifier(folder)
        if stored is not None and matches(stored.verifier, password):
            settings = ProfileSettings.load(folder)
            if not settings.tenant_id:
                continue
            log.info("opened profile %s offline (password checked against its verifier)", folder)
            return OfflineProfile(folder, settings)
    raise OfflineSignInFailed(
        f"{reason}. Wrong password: it does not match the one used at your last online sign-in on this "
        "computer, so the profile stays closed.")


def forget_if_matches(candidates: list[Path], password: str) -> None:
    """The server refused this password: a verifier it still matches is out of date (the password
    was changed or the account disabled), so it must not open the profile offline any more."""
    for folder in candidates:
        stored = load_verifier(folder)
        if stored is not None and matches(stored.verifier, password):
            log.info("the server refused a password the offline verifier of %s accepts: forgotten", folder)
            forget_verifier(folder)
