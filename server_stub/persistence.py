"""The durable update log behind every sync room: append (group commit), load, and compaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pycrdt import merge_updates

from server_stub.db.base import Database, time_param
from sync.mirror import doc_from_updates, state_vector
from sync.room import NEVER_CAUGHT, StoredUpdate, describe


class CompactionNotLossless(RuntimeError):
    """The merged snapshot did not reproduce the document; no row was deleted."""


@dataclass(frozen=True)
class CompactionReport:
    folded_rows: int
    upto_seq: int
    snapshot_bytes: int


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class DatabasePersistence:
    """sync.room.Persistence over the `crdt_updates` log and `crdt_snapshots` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, room: str) -> list[bytes]:
        async with self.db.transaction(customer_id=room) as tx:
            snapshot = await tx.fetchone(
                "SELECT payload, upto_seq FROM crdt_snapshots WHERE customer_id = ?", (room,)
            )
            upto = int(snapshot["upto_seq"]) if snapshot else 0
            rows = await tx.fetch(
                "SELECT payload FROM crdt_updates WHERE customer_id = ? AND seq > ? ORDER BY seq", (room, upto)
            )
        updates = [bytes(snapshot["payload"])] if snapshot else []
        updates.extend(bytes(row["payload"]) for row in rows)
        return updates

    async def append(self, room: str, updates: Sequence[StoredUpdate]) -> int | None:
        """One transaction, one statement for the whole group: durability at batch cost."""
        if not updates:
            return None
        values = ", ".join(["(?, ?, ?, ?)"] * len(updates))
        params: list[Any] = []
        for update in updates:
            params.extend((room, update.user_id, update.update, time_param(self.db, _utc(update.received_at))))
        async with self.db.transaction(customer_id=room) as tx:
            rows = await tx.fetch(
                f"INSERT INTO crdt_updates (customer_id, user_id, payload, received_at) VALUES {values} RETURNING seq",
                tuple(params),
            )
        return max(int(row["seq"]) for row in rows)

    async def head(self, room: str) -> int | None:
        async with self.db.transaction(customer_id=room) as tx:
            top = await tx.fetchval("SELECT max(seq) FROM crdt_updates WHERE customer_id = ?", (room,))
            if top is None:
                top = await tx.fetchval("SELECT upto_seq FROM crdt_snapshots WHERE customer_id = ?", (room,))
        return None if top is None else int(top)

    async def log_size(self, room: str) -> int:
        async with self.db.transaction(customer_id=room) as tx:
            return int(await tx.fetchval("SELECT count(*) FROM crdt_updates WHERE customer_id = ?", (room,)))

    async def last_compaction(self, room: str) -> dict[str, Any] | None:
        async with self.db.transaction(customer_id=room) as tx:
            return await tx.fetchone(
                "SELECT upto_seq, compacted_at, folded_rows FROM crdt_snapshots WHERE customer_id = ?", (room,)
            )

    async def compact(self, room: str) -> CompactionReport:
        """Merge the snapshot and every logged update into a new snapshot, then delete those rows,
        but only after proving the new snapshot reproduces exactly the same document."""
        async with self.db.transaction(customer_id=room) as tx:
            snapshot = await tx.fetchone(
                "SELECT payload, upto_seq FROM crdt_snapshots WHERE customer_id = ?", (room,)
            )
            base = [bytes(snapshot["payload"])] if snapshot else []
            start = int(snapshot["upto_seq"]) if snapshot else 0
            rows = await tx.fetch(
                "SELECT seq, payload FROM crdt_updates WHERE customer_id = ? AND seq > ? ORDER BY seq", (room, start)
            )
            if not rows:
                return CompactionReport(0, start, len(base[0]) if base else 0)
            upto = int(rows[-1]["seq"])
            history = base + [bytes(row["payload"]) for row in rows]
            try:
                merged = merge_updates(*history)
                before, after = doc_from_updates(history), doc_from_updates([merged])
            except BaseException as exc:  # a stored update pycrdt refuses (or panics on)
                if isinstance(exc, NEVER_CAUGHT):
                    raise
                raise CompactionNotLossless(
                    f"the log of {room} up to {upto} cannot be merged: {describe(exc)}") from None
            if before.snapshot() != after.snapshot() or state_vector(before) != state_vector(after):
                raise CompactionNotLossless(f"merging the log of {room} up to {upto} changed the document")
            now = time_param(self.db, datetime.now(UTC))
            await tx.execute(
                "INSERT INTO crdt_snapshots (customer_id, payload, upto_seq, compacted_at, folded_rows) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET payload = excluded.payload, "
                "upto_seq = excluded.upto_seq, compacted_at = excluded.compacted_at, "
                "folded_rows = excluded.folded_rows",
                (room, merged, upto, now, len(rows)),
            )
            await tx.execute("DELETE FROM crdt_updates WHERE customer_id = ? AND seq <= ?", (room, upto))
        return CompactionReport(len(rows), upto, len(merged))
