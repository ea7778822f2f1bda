"""The tenant document schema as data: collections, their fields and defaults (see ARCHITECTURE.md).

Clients, the server and the validation module all read this, so a field is described in one place only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal, TypeAlias

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

SCHEMA_VERSION = 1
COLLECTIONS: tuple[str, ...] = ("vehicles", "drivers", "routes", "geofences")
META = "meta"

Kind = Literal["string", "enum", "number", "bool", "email", "date", "datetime", "ref", "geometry", "stops"]

NAME_MAX_LENGTH = 200
NOTES_MAX_LENGTH = 10_000
SPEED_LIMIT_MAX_KPH = 400.0
RADIUS_MAX_M = 100_000.0
CORRIDOR_MAX_M = 10_000.0


@dataclass(frozen=True)
class FieldSpec:
    """One field of a record. Numeric bounds are ``exclusive_minimum < value <= maximum``."""

    name: str
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] | None = None
    max_length: int | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    geometry_types: tuple[str, ...] | None = None
    references: str | None = None
    default: JSONValue = None


def _fields(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in specs}


def _name() -> FieldSpec:
    return FieldSpec("name", "string", required=True, max_length=NAME_MAX_LENGTH)


def _speed_limit() -> FieldSpec:
    return FieldSpec("speed_limit_kph", "number", exclusive_minimum=0.0, maximum=SPEED_LIMIT_MAX_KPH)


def _trailer() -> tuple[FieldSpec, ...]:
    return (
        FieldSpec("notes", "string", max_length=NOTES_MAX_LENGTH),
        FieldSpec("created_at", "datetime"),
        FieldSpec("updated_at", "datetime"),
    )


FIELDS: dict[str, dict[str, FieldSpec]] = {
    "vehicles": _fields(
        _name(),
        FieldSpec("plate", "string"),
        FieldSpec("vin", "string"),
        # Unique within the tenant, but uniqueness needs the whole document, so storage checks it.
        FieldSpec("device_id", "string"),
        FieldSpec("driver_id", "ref", references="drivers"),
        FieldSpec("status", "enum", choices=("active", "maintenance", "retired"), default="active"),
        _speed_limit(),
        *_trailer(),
    ),
    "drivers": _fields(
        _name(),
        FieldSpec("phone", "string"),
        FieldSpec("email", "email"),
        FieldSpec("license_number", "string"),
        FieldSpec("license_expiry", "date"),
        FieldSpec("status", "enum", choices=("active", "inactive"), default="active"),
        *_trailer(),
    ),
    "routes": _fields(
        _name(),
        FieldSpec("geometry", "geometry", required=True, geometry_types=("LineString",)),
        FieldSpec("vehicle_id", "ref", references="vehicles"),
        FieldSpec("stops", "stops"),
        FieldSpec("corridor_m", "number", exclusive_minimum=0.0, maximum=CORRIDOR_MAX_M, default=100),
        FieldSpec("planned_start", "datetime"),
        *_trailer(),
    ),
    "geofences": _fields(
        _name(),
        # A Point is a circle and needs radius_m; validation enforces that pairing.
        FieldSpec("geometry", "geometry", required=True, geometry_types=("Polygon", "MultiPolygon", "Point")),
        FieldSpec("radius_m", "number", exclusive_minimum=0.0, maximum=RADIUS_MAX_M),
        FieldSpec("kind", "enum", choices=("depot", "customer", "restricted", "other"), default="other"),
        _speed_limit(),
        FieldSpec("active", "bool", default=True),
        *_trailer(),
    ),
}

DEFAULTS: dict[str, dict[str, JSONValue]] = {
    collection: {name: spec.default for name, spec in fields.items() if spec.default is not None}
    for collection, fields in FIELDS.items()
}


def new_record_id() -> str:
    """A fresh record id; any replica may create one offline, so it must be globally unique."""
    return str(uuid.uuid4())
