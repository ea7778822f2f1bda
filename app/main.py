"""`webhost-desktop`: starts the dispatcher or field application, or runs its self-test."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhost-desktop", description="WebHost Fleet desktop client")
    parser.add_argument("--profile", metavar="DIR", help="profile folder holding the local store")
    parser.add_argument("--server", metavar="URL", help="sync server URL")
    parser.add_argument("--field", action="store_true", help="start in field mode")
    parser.add_argument("--self-test", action="store_true", help="run headless checks and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_test:
        from app.selftest import run

        return run()
    from app.env import prepare_qt

    prepare_qt()
    from PySide6.QtWidgets import QApplication

    from app.collector import UiThreadCollector
    from app.launch import open_window
    from app.logs import setup_logging

    log_path = setup_logging()
    app = QApplication(sys.argv[:1])
    app.setApplicationName("WebHost Fleet")
    app.setOrganizationName("WebHost")
    collector = UiThreadCollector(app)
    window = open_window(args.profile, args.server, args.field)
    if window is None:
        print("webhost-desktop: sign-in cancelled", file=sys.stderr)
        return 1
    window.show()
    print(f"webhost-desktop: logging to {log_path}", file=sys.stderr)
    code = app.exec()
    from app.mapview import release_map_profile

    window.deleteLater()
    release_map_profile()
    collector.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
