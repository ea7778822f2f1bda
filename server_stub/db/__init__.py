"""One async database API over Postgres/PostGIS and embedded SpatiaLite, chosen by DATABASE_URL."""

from __future__ import annotations

from server_stub.db.base import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    DatabaseURLError,
    Dialect,
    IntegrityError,
    NestedTransactionError,
    PermissionDenied,
    Row,
    TimescaleMode,
    Tx,
    UniqueViolation,
    as_geojson_sql,
    geom_from_wkb,
    json_param,
    parse_json,
    parse_time,
    time_param,
    utcnow,
)

ACCEPTED_FORMS = "postgresql://user:password@host:port/dbname, postgres://…, or sqlite:///path/to/file.sqlite"

__all__ = [
    "ACCEPTED_FORMS",
    "Database",
    "DatabaseError",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "Dialect",
    "IntegrityError",
    "NestedTransactionError",
    "PermissionDenied",
    "Row",
    "TimescaleMode",
    "Tx",
    "UniqueViolation",
    "as_geojson_sql",
    "geom_from_wkb",
    "json_param",
    "open_database",
    "parse_json",
    "parse_time",
    "time_param",
    "utcnow",
]


async def open_database(url: str, *, timescale: TimescaleMode = "auto") -> Database:
    """Open the database a URL names: `postgresql://…`/`postgres://…` or `sqlite:///path` (dirs are created).

    `timescale` is the operator's WEBHOST_TIMESCALE choice; it matters to Postgres migrations only.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from server_stub.db.postgres import PostgresDatabase

        return await PostgresDatabase.open(url, timescale=timescale)
    if url.startswith("sqlite:///") and url != "sqlite:///":
        from server_stub.db.sqlite import SqliteDatabase

        return await SqliteDatabase.open(url.removeprefix("sqlite:///"))
    shown = url if len(url) <= 80 else url[:77] + "..."
    if "://" in shown:
        # Never echo a password back to the terminal.
        scheme, _, rest = shown.partition("://")
        shown = f"{scheme}://{rest.rpartition('@')[2]}"
    raise DatabaseURLError(f"unsupported DATABASE_URL {shown!r}; use {ACCEPTED_FORMS}")
