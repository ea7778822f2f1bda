"""Validated edits of the tenant document: the one API the desktop UI and the REST API both use.

Every write is checked with sync.validation before it touches the document; an invalid write
raises ValidationError naming the field and the reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sync.document import FleetDocument, Record
from sync.mirror import Mirror
from sync.schema import COLLECTIONS, DEFAULTS, new_record_id
from sync.validation import Problem, ValidationError, validate_record
from sync.values import ValuePolicyError, check_fields, check_record_id

READ_ONLY_FIELDS = ("created_at",)


class RecordNotFound(KeyError):
    """No record with that id in the collection."""

    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(f"{collection}/{record_id} does not exist")
        self.collection = collection
        self.record_id = record_id

    def __str__(self) -> str:
        return str(self.args[0])


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_collection(collection: str) -> None:
    if collection not in COLLECTIONS:
        raise ValidationError(collection, [Problem("(collection)", f"must be one of {', '.join(COLLECTIONS)}")])


def _check_storable(collection: str, fields: Mapping[str, Any], new_id: str | None = None) -> None:
    """The value policy (sync/values.py), as a ValidationError: the sync socket refuses such
    content before merge, so a local or REST edit must never produce it. Only new records get
    the id rules: an existing record keeps the id it has."""
    try:
        if new_id is not None:
            check_record_id(new_id, "/id")
        check_fields(fields)
    except ValuePolicyError as exc:
        field = exc.pointer.lstrip("/").split("/", 1)[0] or "(record)"
        raise ValidationError(collection, [Problem(field, f"{exc.reason} (at {exc.pointer})")]) from exc


def _check_device_unique(document: FleetDocument, record_id: str, record: Mapping[str, Any]) -> None:
    device_id = record.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        return
    owner = document.device_owner(device_id)
    if owner is not None and owner != record_id:
        problem = Problem("device_id", f"{device_id!r} is already used by vehicle {owner}")
        raise ValidationError("vehicles", [problem])


def create_record(document: FleetDocument, collection: str, fields: Mapping[str, Any], *,
                  record_id: str | None = None, now: str | None = None) -> str:
    """Add a record (defaults filled in, timestamps set) and return its id; call inside a transaction."""
    _check_collection(collection)
    record_id = record_id or new_record_id()
    if document.record(collection, record_id) is not None:
        raise ValidationError(collection, [Problem("id", f"{record_id} already exists")])
    stamp = now or utc_now()
    record: dict[str, Any] = {**DEFAULTS.get(collection, {}), **{k: v for k, v in fields.items() if v is not None}}
    record.setdefault("created_at", stamp)
    record["updated_at"] = stamp
    _check_storable(collection, record, new_id=record_id)
    validate_record(collection, record)
    if collection == "vehicles":
        _check_device_unique(document, record_id, record)
    document.ensure_meta()
    document.put_record(collection, record_id, record)
    return record_id


def update_record(document: FleetDocument, collection: str, record_id: str, changes: Mapping[str, Any], *,
                  now: str | None = None) -> Record:
    """Change some fields (None removes one) after validating the record they would produce."""
    _check_collection(collection)
    current = document.record(collection, record_id)
    if current is None:
        raise RecordNotFound(collection, record_id)
    changes = {k: v for k, v in changes.items() if k not in READ_ONLY_FIELDS and current.get(k) != v}
    if not changes:
        return current
    merged = {**current, **changes}
    merged = {k: v for k, v in merged.items() if v is not None}
    merged["updated_at"] = now or utc_now()
    _check_storable(collection, {k: v for k, v in changes.items() if v is not None})
    validate_record(collection, merged)
    if collection == "vehicles":
        _check_device_unique(document, record_id, merged)
    document.set_fields(collection, record_id, {**changes, "updated_at": merged["updated_at"]})
    return merged


def delete_record(document: FleetDocument, collection: str, record_id: str) -> None:
    _check_collection(collection)
    if not document.delete_record(collection, record_id):
        raise RecordNotFound(collection, record_id)


class LocalFleet:
    """The desktop's edit API: each call is one local transaction, mirrored to SQLite atomically."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def create(self, collection: str, fields: Mapping[str, Any], *, record_id: str | None = None) -> str:
        with self.mirror.edit() as document:
            return create_record(document, collection, fields, record_id=record_id)

    def update(self, collection: str, record_id: str, changes: Mapping[str, Any]) -> Record:
        with self.mirror.edit() as document:
            return update_record(document, collection, record_id, changes)

    def delete(self, collection: str, record_id: str) -> None:
        with self.mirror.edit() as document:
            delete_record(document, collection, record_id)
