"""Every command, option and setting a user can reach is documented (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from app.main import build_parser as desktop_parser
from server_stub.cli import build_parser as server_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices) if actions else []


@pytest.mark.parametrize("command", subcommands(server_parser()))
def test_every_server_subcommand_is_documented(command: str) -> None:
    assert f"webhost-server {command}" in DOCS


@pytest.mark.parametrize("option", [opt for a in desktop_parser()._actions for opt in a.option_strings
                                    if opt.startswith("--") and opt != "--help"])
def test_every_desktop_option_is_documented(option: str) -> None:
    assert option in DOCS


# Every variable the server's settings read, found in the source so a new one cannot slip by.
SERVER_VARIABLES = sorted(set(re.findall(r'"((?:WEBHOST|DATABASE|REDIS)_[A-Z_]+|HOST|PORT)"',
                                         (ROOT / "server_stub" / "config.py").read_text())))


@pytest.mark.parametrize("variable", sorted({*SERVER_VARIABLES, "SPATIALITE_PATH"}))
def test_every_setting_is_documented(variable: str) -> None:
    assert variable in DOCS


def test_readme_opens_with_the_two_commands() -> None:
    opening = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    assert "make demo" in opening and "make test" in opening
