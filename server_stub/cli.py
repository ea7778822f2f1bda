"""`webhost-server`: the operator's command line (serve, migrate, accounts, extensions, demo data)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "serve": "run the sync server",
    "migrate": "apply database migrations",
    "create-tenant": "create a customer (tenant)",
    "create-user": "create a user in a tenant",
    "create-api-key": "create an API key (shown once)",
    "verify-extensions": "report PostGIS and TimescaleDB availability",
    "demo-data": "load the demo tenant and fleet",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhost-server", description="WebHost Fleet sync server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"webhost-server {args.command}: not available in this build yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
