"""The local CRDT update log and sync metadata; the document is rebuilt from the log on start."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.store import Store


_INSERT = "INSERT INTO crdt_log (payload, origin, created_at, acked) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    payload: bytes
    origin: str
    created_at: float
    acked: bool


class SyncLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    def append(self, payload: bytes, origin: str) -> int:
        """Append an update; call it inside the transaction that also updates the mirror tables."""
        with self._store.transaction() as conn:
            return self.write(conn, payload, origin)

    def append_many(self, payloads: Iterable[bytes], origin: str) -> None:
        """Append several updates in one statement (remote updates that arrived together)."""
        with self._store.transaction() as conn:
            self.write_many(conn, payloads, origin)

    def write(self, conn: Any, payload: bytes, origin: str) -> int:
        """append() on a connection already inside a transaction (no savepoint); returns the seq."""
        cursor = conn.execute(_INSERT, (payload, origin, time.time(), 0 if origin == "local" else 1))
        return int(cursor.lastrowid)

    def write_many(self, conn: Any, payloads: Iterable[bytes], origin: str) -> None:
        """append_many() on a connection already inside a transaction (no savepoint)."""
        now = time.time()
        acked = 0 if origin == "local" else 1
        conn.executemany(_INSERT, [(payload, origin, now, acked) for payload in payloads])

    def entries(self, *, after: int = 0) -> list[LogEntry]:
        rows = self._store.query(
            "SELECT seq, payload, origin, created_at, acked FROM crdt_log WHERE seq > ? ORDER BY seq", (after,)
        )
        return [LogEntry(r[0], bytes(r[1]), r[2], r[3], bool(r[4])) for r in rows]

    def unacked_local(self) -> list[LogEntry]:
        rows = self._store.query(
            "SELECT seq, payload, origin, created_at, acked FROM crdt_log "
            "WHERE origin = 'local' AND acked = 0 ORDER BY seq"
        )
        return [LogEntry(r[0], bytes(r[1]), r[2], r[3], False) for r in rows]

    def pending_count(self) -> int:
        return int(self._store.scalar("SELECT count(*) FROM crdt_log WHERE origin = 'local' AND acked = 0"))

    def mark_acked_upto(self, seq: int) -> int:
        """The server committed every local update up to seq; returns how many rows that settled."""
        with self._store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE crdt_log SET acked = 1 WHERE origin = 'local' AND acked = 0 AND seq <= ?", (seq,)
            )
            return int(cursor.rowcount)

    def max_seq(self) -> int:
        return int(self._store.scalar("SELECT coalesce(max(seq), 0) FROM crdt_log"))

    def mark_acked(self, seqs: Iterable[int]) -> None:
        with self._store.transaction() as conn:
            conn.executemany("UPDATE crdt_log SET acked = 1 WHERE seq = ?", [(s,) for s in seqs])

    def replace_with_snapshot(self, upto_seq: int, snapshot: bytes) -> None:
        """Swap every row up to upto_seq for one snapshot row. The caller must have proven the
        snapshot holds everything those rows held; unacked local rows are never folded in."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM crdt_log WHERE seq <= ?", (upto_seq,))
            conn.execute(
                "INSERT INTO crdt_log (seq, payload, origin, created_at, acked) VALUES (?, ?, 'snapshot', ?, 1)",
                (upto_seq, snapshot, time.time()),
            )

    def size(self) -> int:
        return int(self._store.scalar("SELECT count(*) FROM crdt_log"))

    # -- metadata ----------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        value = self._store.scalar("SELECT value FROM sync_meta WHERE key = ?", (key,))
        return default if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO sync_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
