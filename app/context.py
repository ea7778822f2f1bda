"""What one window works on: a profile's store, its CRDT mirror, the edit API, the change signal
and the background workers. The UI reaches storage only through these (Anki's Collection)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject

from app.ops import Ops
from app.profiles import ProfileSettings
from app.signals import StoreSignals
from storage import Store
from sync.mirror import Mirror
from sync.services import LocalFleet

log = logging.getLogger(__name__)


@dataclass
class FleetContext:
    store: Store
    mirror: Mirror
    fleet: LocalFleet
    signals: StoreSignals
    ops: Ops
    profile_dir: Path
    settings: ProfileSettings = field(default_factory=ProfileSettings)
    read_only: bool = False

    @classmethod
    def open(cls, profile_dir: Path, *, read_only: bool = False, settings: ProfileSettings | None = None,
             parent: QObject | None = None) -> FleetContext:
        """Open (or create) the profile's store, rebuild the mirror from its log, wire the signal."""
        profile_dir.mkdir(parents=True, exist_ok=True)
        store = Store(profile_dir / "fleet.sqlite")
        mirror = Mirror.open(store)
        signals = StoreSignals(parent)
        signals.attach(mirror)
        return cls(store, mirror, LocalFleet(mirror), signals, Ops(parent), profile_dir,
                   settings or ProfileSettings.load(profile_dir), read_only)

    def close(self) -> None:
        """Wait for running background work, then close the store (later work fails quietly)."""
        self.signals.detach()
        self.ops.wait_idle()
        self.store.close()
        self.ops.wait_idle()
        self.ops.shutdown()
