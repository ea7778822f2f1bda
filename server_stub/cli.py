"""`webhost-server`: the operator's command line (serve, migrate, accounts, extensions, demo data)."""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import getpass
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from server_stub import accounts
from server_stub.config import ConfigError, Settings, default_database_url, timescale_mode
from server_stub.db import Database, DatabaseError, DatabaseURLError, open_database
from server_stub.db import migrations as db_migrations
from storage.spatialite import ExtensionLoadingUnsupported, SpatialiteNotFound

T = TypeVar("T")
PROG = "webhost-server"

SUBCOMMANDS = {
    "serve": "run the sync server",
    "migrate": "apply database migrations",
    "create-tenant": "create a customer (tenant)",
    "create-user": "create a user in a tenant",
    "create-api-key": "create an API key (shown once)",
    "verify-extensions": "report PostGIS and TimescaleDB: installed, enabled, and what migrate will do",
    "demo-data": "load the demo tenant and fleet",
}


class CliError(Exception):
    """A failure to report as one line on stderr with this exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- server logging and proxies -------------------------------------------------------------

# `?token=…` on /sync and /api/v1/live (browsers cannot set websocket headers), `refresh_token`
# should a client ever put one in a URL: uvicorn logs the whole path with its query.
_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&;\s])(?:token|access_token|refresh_token)=)[^&;\s\"']*", re.IGNORECASE)


def scrub_tokens(text: str) -> str:
    """The text with the value of every token query parameter replaced by `***`."""
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


class TokenScrubber(logging.Filter):
    """Keeps credentials out of the logs: uvicorn's access lines and websocket messages carry the
    request path with its query string, where websocket clients put their token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(scrub_tokens(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: scrub_tokens(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup with the token scrubber on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["scrub_tokens"] = {"()": TokenScrubber}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "scrub_tokens"]
    return config


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """X-Forwarded-For/-Proto are believed only from WEBHOST_TRUSTED_PROXIES (default: nobody).

    uvicorn would otherwise trust 127.0.0.1 (or FORWARDED_ALLOW_IPS), so any local caller, or
    anything behind an unconfigured local proxy, could pick the address the login limits see."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


# -- helpers ---------------------------------------------------------------------------------


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    return env


def _database_url(args: argparse.Namespace) -> str:
    # Most commands need only the URL, so a missing production secret must not block them.
    return _env(args).get("DATABASE_URL") or default_database_url()


def _with_db(url: str, action: Callable[[Database], Awaitable[T]], *, require_schema: bool = True) -> T:
    timescale = timescale_mode(os.environ)

    async def run() -> T:
        db = await open_database(url, timescale=timescale)
        try:
            if require_schema and await db_migrations.pending(db):
                raise CliError(f"the database is not migrated yet; run `{PROG} migrate` first")
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())


def _password(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    if args.password:
        return str(args.password)
    if env.get("WEBHOST_PASSWORD"):
        return env["WEBHOST_PASSWORD"]
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise CliError("the passwords do not match")
        return first
    raise CliError("no password given: use --password, set WEBHOST_PASSWORD, or run in a terminal to be asked", 2)


# -- commands --------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = _with_db(_database_url(args), db_migrations.migrate, require_schema=False)
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


def cmd_create_tenant(args: argparse.Namespace) -> int:
    tenant = _with_db(_database_url(args), lambda db: accounts.create_tenant(db, args.name, args.plan))
    print(tenant.id)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    password = _password(args, _env(args))
    user = _with_db(
        _database_url(args), lambda db: accounts.create_user(db, args.email, password, args.role, args.tenant)
    )
    print(user.id)
    return 0


def cmd_create_api_key(args: argparse.Namespace) -> int:
    scopes = [s for s in args.scopes.split(",") if s.strip()]
    key, secret = _with_db(
        _database_url(args), lambda db: accounts.create_api_key(db, args.tenant, args.name, scopes, args.role)
    )
    print(
        f"API key {key.name!r} ({key.prefix}…, scopes {','.join(key.scopes)}, role {key.role}) created.",
        file=sys.stderr,
    )
    print("Store this secret now: it will not be shown again.", file=sys.stderr)
    print(secret)
    return 0


async def _extension_lines(db: Database) -> tuple[list[str], int]:
    """What is installed on the server, what is enabled in this database, and what `migrate` will do."""
    installed = await db.extensions()
    if db.dialect == "sqlite":
        return [f"spatialite: present ({installed['spatialite']})", "positions: a plain SpatiaLite table"], 0
    from server_stub.db.postgres import PostgresDatabase
    from server_stub.partitions import storage_mode

    assert isinstance(db, PostgresDatabase)
    available = await db.available_extensions()
    lines, code = [], 0
    if installed["postgis"]:
        lines.append(f"postgis: enabled ({installed['postgis']})")
    elif available["postgis"]:
        lines.append(f"postgis: installed ({available['postgis']}), not enabled yet — `{PROG} migrate` enables it")
    else:
        lines.append("postgis: missing — install PostGIS on the Postgres server (e.g. postgresql-15-postgis-3)")
        code = 1
    preloaded = await db.timescale_preloaded()
    positions_table = await db.fetchval("SELECT to_regclass('public.gps_positions') IS NOT NULL")
    mode = await storage_mode(db) if positions_table else None
    if installed["timescaledb"]:
        lines.append(f"timescaledb: enabled ({installed['timescaledb']})")
    elif not available["timescaledb"]:
        lines.append("timescaledb: not installed on this server")
    elif not preloaded:
        lines.append(
            f"timescaledb: installed ({available['timescaledb']}) but not in shared_preload_libraries, so it "
            "cannot be enabled"
        )
    else:
        lines.append(f"timescaledb: installed ({available['timescaledb']}), not enabled in this database yet")
    if mode == "timescale":
        lines.append("positions: a TimescaleDB hypertable (1-day chunks, compression and retention policies)")
    elif mode is not None:
        lines.append("positions: native daily partitions")
    elif db.timescale == "off":
        lines.append(f"positions: `{PROG} migrate` will use native daily partitions (WEBHOST_TIMESCALE=off)")
    elif installed["timescaledb"] or (available["timescaledb"] and preloaded):
        lines.append(f"positions: `{PROG} migrate` will enable timescaledb and create a hypertable")
    else:
        lines.append(f"positions: `{PROG} migrate` will use native daily partitions")
    return lines, code


def cmd_verify_extensions(args: argparse.Namespace) -> int:
    lines, code = _with_db(_database_url(args), _extension_lines, require_schema=False)
    print("\n".join(lines))
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(_env(args))
    settings = dataclasses.replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    if not args.no_migrate:
        applied = _with_db(settings.database_url, db_migrations.migrate, require_schema=False)
        if applied:
            print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
    from server_stub.app import create_app

    # We already migrated (or were told not to): the app need not do it again.
    app = create_app(settings, run_migrations=False)

    import uvicorn

    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning" if args.quiet else "info",
                access_log=not args.quiet, log_config=uvicorn_log_config(), **uvicorn_proxy_options(settings),
                # Requests still running 3 s after SIGTERM are cancelled: one stuck on a hung
                # database must not keep the server from stopping (tests/server/test_tenant_faults.py).
                timeout_graceful_shutdown=3)
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from server_stub import demo

    settings = Settings.from_env(_env(args))

    async def load(db: Database) -> Any:
        await db_migrations.migrate(db)
        return await demo.load_demo(db, settings)

    result = _with_db(settings.database_url, load, require_schema=False)
    if result is not None:
        print(result)
    return 0


# -- parser and entry point ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", metavar="URL", help="database to use (overrides DATABASE_URL): postgresql://… or sqlite:///…"
    )
    parser = argparse.ArgumentParser(prog=PROG, description="WebHost Fleet sync server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=SUBCOMMANDS[name], description=SUBCOMMANDS[name])
        command.set_defaults(handler=handler)
        return command

    serve = add("serve", cmd_serve)
    serve.add_argument("--host", help="address to listen on (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT or 8000)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")
    serve.add_argument("--quiet", action="store_true", help="log warnings and errors only, no access log")
    add("migrate", cmd_migrate)
    tenant = add("create-tenant", cmd_create_tenant)
    tenant.add_argument("name", metavar="NAME", help="the customer's display name")
    tenant.add_argument("--plan", choices=accounts.PLANS, default="hobby", help="subscription plan (default hobby)")
    user = add("create-user", cmd_create_user)
    user.add_argument("email", metavar="EMAIL")
    user.add_argument("--role", required=True, choices=accounts.ROLES)
    user.add_argument("--tenant", metavar="ID", help="tenant id (required for every role but platform_admin)")
    user.add_argument("--password", help="the password (else WEBHOST_PASSWORD, else asked for in a terminal)")
    key = add("create-api-key", cmd_create_api_key)
    key.add_argument("--tenant", metavar="ID", required=True)
    key.add_argument("--name", required=True, help="what the key is for, e.g. 'tracker gateway'")
    key.add_argument("--scopes", default="read", help=f"comma-separated, from {','.join(accounts.SCOPES)}")
    key.add_argument("--role", choices=accounts.TENANT_ROLES, default="dispatcher", help="role the key acts as")
    add("verify-extensions", cmd_verify_extensions)
    add("demo-data", cmd_demo_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        code, message = exc.code, str(exc)
    except (ConfigError, DatabaseURLError) as exc:
        code, message = 2, str(exc)
    except (DatabaseError, accounts.AccountError, SpatialiteNotFound, ExtensionLoadingUnsupported, OSError) as exc:
        code, message = 1, str(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the operator gets one line; WEBHOST_DEBUG=1 shows the traceback
        if os.environ.get("WEBHOST_DEBUG"):
            traceback.print_exc()
        code, message = 1, f"unexpected {type(exc).__name__}: {exc} (set WEBHOST_DEBUG=1 for details)"
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
