"""The local store: one SpatiaLite file per profile, one writer connection, per-thread readers."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from storage import migrations, spatialite
from storage.drivers import DriverRepository
from storage.events import EventRepository
from storage.geofences import GeofenceRepository
from storage.positions import PositionOutbox
from storage.routes import RouteRepository
from storage.sync_log import SyncLog
from storage.vehicles import VehicleRepository

APP_NAME = "webhost-fleet"

log = logging.getLogger(__name__)


def default_store_path(profile: str = "default") -> Path:
    """Where a profile's database lives: one file per profile under the platform data folder.

    Profile names become folder names; any name that is not already a plain lower-case folder
    name gets a hash of the exact name appended, so "alice@x", "alice_x" and "Alice_x" never
    share a file (not even on case-insensitive file systems) and ".." cannot climb out.
    """
    readable = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in profile.lower()) or "default"
    if readable != profile:
        readable += "-" + hashlib.sha256(profile.encode()).hexdigest()[:10]
    return Path(platformdirs.user_data_dir(APP_NAME)) / "profiles" / readable / "fleet.sqlite"


class Store:
    """Façade over the local database: owns the connections and one repository per resource.

    Only one connection ever writes (datasette's rule), so SQLite never has to arbitrate
    between writers in this process; every write is a `BEGIN IMMEDIATE` transaction.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, profile: str = "default") -> None:
        self.path = Path(path) if path is not None else default_store_path(profile)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = spatialite.connect(self.path)
        self._writer.row_factory = spatialite.sqlite_module().Row
        # WAL lets readers run beside the writer; NORMAL sync is crash-safe for the process
        # (SIGKILL loses nothing committed) and only risks the last commits on power loss.
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._writer.execute("PRAGMA synchronous = NORMAL")
        self._autocheckpoint_pages = int(self._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self._checkpointer = _Checkpointer(self.path)
        self._autocheckpoint_off = False
        self._write_lock = threading.RLock()
        self._tx_owner: int | None = None
        self._tx_depth = 0
        self._local = threading.local()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        migrations.apply_pending(self)

        self.vehicles = VehicleRepository(self)
        self.drivers = DriverRepository(self)
        self.routes = RouteRepository(self)
        self.geofences = GeofenceRepository(self)
        self.positions = PositionOutbox(self)
        self.events = EventRepository(self)
        self.sync_log = SyncLog(self)

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, bulk: bool = False) -> Iterator[Any]:
        """A write transaction on the single writer connection; nested calls become savepoints.

        bulk: a large write (an initial sync: ~20 MB of WAL). Its commit does not also copy the
        WAL into the database file, as SQLite's auto-checkpoint would right there (a tenth of an
        initial sync); a background thread does that copy on its own connection (a PASSIVE
        checkpoint) straight after. The transaction, its atomicity and the synchronous setting
        are exactly those of any other: only who copies the WAL afterwards changes.
        """
        with self._write_lock:
            if self._closed:
                raise StoreClosed(f"store {self.path} is closed")
            if self._tx_depth:
                savepoint = f"sp{self._tx_depth}"
                self._writer.execute(f"SAVEPOINT {savepoint}")
                self._tx_depth += 1
                try:
                    yield self._writer
                except BaseException:
                    self._writer.execute(f"ROLLBACK TO {savepoint}")
                    self._writer.execute(f"RELEASE {savepoint}")
                    raise
                else:
                    self._writer.execute(f"RELEASE {savepoint}")
                finally:
                    self._tx_depth -= 1
                return
            if self._autocheckpoint_off and not bulk and self._checkpointer.idle():
                # The background copy is done: back to SQLite's own checkpoints at commit.
                self._writer.execute(f"PRAGMA wal_autocheckpoint = {self._autocheckpoint_pages}")
                self._autocheckpoint_off = False
            self._writer.execute("BEGIN IMMEDIATE")
            self._tx_depth = 1
            self._tx_owner = threading.get_ident()
            try:
                yield self._writer
                if bulk and not self._autocheckpoint_off:
                    # Until the background checkpoint has run, small commits leave the WAL alone too.
                    self._writer.execute("PRAGMA wal_autocheckpoint = 0")
                    self._autocheckpoint_off = True
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            else:
                self._writer.execute("COMMIT")
                if bulk:
                    self._checkpointer.request()
            finally:
                self._tx_depth = 0
                self._tx_owner = None

    def reader(self) -> Any:
        """A connection for reading on this thread; inside a write transaction, the writer itself
        so the caller sees its own uncommitted rows."""
        if self._tx_owner == threading.get_ident():
            return self._writer
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreClosed(f"store {self.path} is closed")
            conn = spatialite.connect(self.path, read_only=True)
            conn.row_factory = spatialite.sqlite_module().Row
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        return list(self.reader().execute(sql, params).fetchall())

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.reader().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def integrity_check(self) -> str:
        return str(self.scalar("PRAGMA integrity_check"))

    def close(self) -> None:
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        self._checkpointer.stop()
        with self._write_lock:
            self._writer.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Checkpointer:
    """Copies the WAL into the database file on its own thread and connection, on request.

    A PASSIVE checkpoint runs beside readers and the writer (SQLite serialises checkpoints
    itself); whatever it cannot copy yet, a later checkpoint does. Killing the process in the
    middle is as safe as for any checkpoint: the WAL still holds every committed frame.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._changed = threading.Condition()
        self._requested = 0  # checkpoints asked for, and finished (a request during one asks again)
        self._finished = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def idle(self) -> bool:
        with self._changed:
            return self._finished == self._requested

    def request(self) -> None:
        with self._changed:
            if self._stopping:
                return
            self._requested += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"checkpoint {self._path.name}",
                                                daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def stop(self) -> None:
        """Finish the checkpoint asked for last, then end the thread."""
        with self._changed:
            self._stopping = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn = spatialite.sqlite_module().connect(str(self._path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = NORMAL")  # as the writer (whose setting decides the syncs)
            while True:
                with self._changed:
                    while self._finished == self._requested and not self._stopping:
                        self._changed.wait()
                    if self._finished == self._requested:
                        return  # stopping, and nothing left to copy
                    target = self._requested
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception:  # a later checkpoint (the writer's own, at the latest) copies it
                    log.exception("background WAL checkpoint of %s failed", self._path)
                with self._changed:
                    self._finished = target
        finally:
            conn.close()


class StoreClosed(RuntimeError):
    """The store was used after close()."""
