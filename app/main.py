"""`webhost-desktop`: starts the dispatcher or field application, or runs its self-test."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhost-desktop", description="WebHost Fleet desktop client")
    parser.add_argument("--profile", metavar="DIR", help="profile folder holding the local store")
    parser.add_argument("--server", metavar="URL", help="sync server URL")
    parser.add_argument("--field", action="store_true", help="start in field mode")
    parser.add_argument("--self-test", action="store_true", help="run headless checks and exit")
    return parser


def self_test() -> int:
    """One line per check; non-zero exit when any check fails."""
    from storage import Store, find_spatialite

    failures = 0

    def report(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    try:
        report("mod_spatialite loads", True, find_spatialite())
    except Exception as exc:
        report("mod_spatialite loads", False, str(exc))
    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "self-test.sqlite") as store:
            store.sync_log.set_meta("self_test", "1")
            report("store is writable", store.integrity_check() == "ok", str(store.path))
    except Exception as exc:
        report("store is writable", False, str(exc))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_test:
        return self_test()
    print("webhost-desktop: the desktop window is not available in this build yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
