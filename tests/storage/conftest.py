"""Fixtures for the SpatiaLite store tests: a real store in a fresh file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import storage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[storage.Store]:
    s = storage.Store(tmp_path / "fleet.sqlite")
    try:
        yield s
    finally:
        s.close()
