"""Drivers of the tenant, mirrored from the document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NewType

from storage.repository import Repository

DriverId = NewType("DriverId", str)


@dataclass(frozen=True, slots=True)
class Driver:
    id: DriverId
    name: str | None
    phone: str | None
    email: str | None
    license_number: str | None
    license_expiry: str | None
    status: str | None
    notes: str | None
    created_at: str | None
    updated_at: str | None
    data: dict[str, Any]
    invalid_reason: str | None


class DriverRepository(Repository[Driver]):
    table = "drivers"
    record_type = Driver
    columns = ("name", "phone", "email", "license_number", "license_expiry", "status", "notes",
               "created_at", "updated_at")
    search_columns = ("name", "phone", "email", "license_number")
