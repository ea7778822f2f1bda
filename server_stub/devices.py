"""Device ids (a vehicle's tracker or phone identifier) are unique across the whole server.

The OsmAnd / Traccar phone protocol carries no token: the device id alone says whose vehicle a
fix belongs to. So one tenant must never be able to take another tenant's id, and the phone
endpoint must not tell a stranger whether an id exists anywhere.

A claim (`device_claims`: device id -> tenant) records who holds an id. It is made

- by `claim()` before a REST or admin write registers the id: another tenant's id is refused
  there (`DeviceTaken`, which names no tenant);
- lazily by `holder()` when a phone reports under an id exactly one tenant uses;
- by `foreign_devices()` for ids that reach the tables through the CRDT document, which must
  never be rejected: the projection calls it and flags the records whose id another tenant
  holds (their phones' fixes keep going to the holder).

A claim lapses when its tenant no longer has a vehicle with that id (after `CLAIM_GRACE`, which
covers a write whose projection has not landed yet), so a released id can be registered again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from server_stub.db import Database, Tx, parse_time, time_param, utcnow

CLAIM_GRACE = timedelta(seconds=60)
CONFLICT_REASON = "device_id is registered to another account: this vehicle receives no phone positions"


class DeviceTaken(Exception):
    """Another tenant holds this device id (deliberately not saying which)."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device id {device_id!r} is already registered; choose another one")
        self.device_id = device_id


async def _lookup(tx: Tx, device_id: str) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The claim on a device id and every (tenant, vehicle) whose projected record uses it."""
    if tx.dialect == "postgres":
        # Outside a tenant only a lookup naming the device id sees its vehicles (policy device_lookup).
        await tx.execute("SELECT set_config('app.device_lookup', ?, true)", (device_id,))
    claim = await tx.fetchone("SELECT customer_id, claimed_at FROM device_claims WHERE device_id = ?", (device_id,))
    rows = await tx.fetch(
        "SELECT customer_id, id FROM vehicles WHERE device_id = ? ORDER BY customer_id, id", (device_id,)
    )
    return claim, [(row["customer_id"], row["id"]) for row in rows]


def _claim_holds(claim: dict[str, Any], users: set[str]) -> bool:
    """A claim stands while its tenant uses the id, or within the grace after it was made."""
    if claim["customer_id"] in users:
        return True
    claimed_at = parse_time(claim["claimed_at"])
    return claimed_at is not None and utcnow() - claimed_at < CLAIM_GRACE


async def _take(tx: Tx, device_id: str, tenant_id: str, claim: dict[str, Any] | None) -> bool:
    """Claim the id for tenant_id: a new claim, or a lapsed one taken over. False if someone was faster."""
    now = time_param(tx.dialect, utcnow())
    if claim is None:
        inserted = await tx.execute(
            "INSERT INTO device_claims (device_id, customer_id, claimed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id) DO NOTHING",
            (device_id, tenant_id, now),
        )
        return inserted == 1
    # Conditional on the old holder: two tenants taking over the same lapsed claim cannot both win.
    updated = await tx.execute(
        "UPDATE device_claims SET customer_id = ?, claimed_at = ? WHERE device_id = ? AND customer_id = ?",
        (tenant_id, now, device_id, claim["customer_id"]),
    )
    return updated == 1


async def claim(db: Database, tenant_id: str, device_id: str | None) -> None:
    """Reserve a device id for a tenant before a write registers it; DeviceTaken when another
    tenant holds it (a claim of theirs, or a vehicle of theirs from before claims existed)."""
    if not isinstance(device_id, str) or not device_id:
        return  # no id (or a malformed one, which validation refuses) claims nothing
    async with db.transaction() as tx:
        found, users = await _lookup(tx, device_id)
        tenants = {tenant for tenant, _ in users}
        if found is not None and found["customer_id"] == tenant_id:
            return
        if found is not None and _claim_holds(found, tenants):
            raise DeviceTaken(device_id)
        if tenants - {tenant_id}:
            raise DeviceTaken(device_id)
        if not await _take(tx, device_id, tenant_id, found):
            raise DeviceTaken(device_id)


async def holder(db: Database, device_id: str) -> tuple[str, str] | None:
    """The (tenant, vehicle) a phone's fixes go to, or None: unknown, or no single answer (the
    holder has the id on several vehicles, or tenants share it and none holds a claim)."""
    async with db.transaction() as tx:
        found, users = await _lookup(tx, device_id)
        tenants = {tenant for tenant, _ in users}
        if found is not None and _claim_holds(found, tenants):
            tenant = found["customer_id"]
        elif len(tenants) == 1:
            (tenant,) = tenants
            # First come: an id registered through the document before claims existed (or before
            # its first fix) is claimed by the one tenant using it.
            if not await _take(tx, device_id, tenant, found):
                return None
        else:
            return None
    vehicles = [vehicle for owner, vehicle in users if owner == tenant]
    return (tenant, vehicles[0]) if len(vehicles) == 1 else None


async def foreign_devices(db: Database, tenant_id: str, device_ids: Iterable[str | None]) -> set[str]:
    """For the projection: of a tenant's vehicles' device ids, those another tenant holds.

    Records with these ids are to be flagged (CONFLICT_REASON), never rejected: they came
    through the CRDT document. Ids nobody holds are claimed for this tenant on the way (first
    come). Runs in the system context, outside the tenant's transaction (claims of other tenants
    are invisible inside it)."""
    foreign: set[str] = set()
    wanted = sorted({d for d in device_ids if isinstance(d, str) and d})
    if not wanted:
        return foreign
    async with db.transaction() as tx:
        for device_id in wanted:
            found, users = await _lookup(tx, device_id)
            tenants = {tenant for tenant, _ in users}
            if found is not None and found["customer_id"] == tenant_id:
                continue
            if found is not None and _claim_holds(found, tenants):
                foreign.add(device_id)
            elif tenants - {tenant_id}:
                foreign.add(device_id)  # shared from before claims existed: nobody's until one lets go
            elif not await _take(tx, device_id, tenant_id, found):
                foreign.add(device_id)
    return foreign
