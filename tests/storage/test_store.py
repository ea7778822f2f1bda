"""The store's transactions, savepoints and per-thread readers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

import storage
from storage import StoreClosed

T = TypeVar("T")


class Boom(Exception):
    pass


def _on_other_thread(fn: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result(timeout=30)


def test_failed_nested_transaction_rolls_back_only_its_savepoint(store: storage.Store) -> None:
    with store.transaction():
        store.vehicles.upsert("outer", {"name": "outer"})
        with pytest.raises(Boom), store.transaction():
            store.vehicles.upsert("inner", {"name": "inner"})
            raise Boom
        store.vehicles.upsert("after", {"name": "after"})
    assert store.vehicles.ids() == {"outer", "after"}


def test_exception_in_outer_transaction_rolls_back_everything(store: storage.Store) -> None:
    with pytest.raises(Boom), store.transaction():
        store.vehicles.upsert("outer", {"name": "outer"})
        with store.transaction():
            store.vehicles.upsert("inner", {"name": "inner"})
        raise Boom
    assert store.vehicles.ids() == set()
    # And the writer is free again: a new transaction commits.
    store.vehicles.upsert("later", {"name": "later"})
    assert store.vehicles.ids() == {"later"}


def test_reader_on_other_thread_sees_rows_only_after_commit(store: storage.Store) -> None:
    with store.transaction():
        store.vehicles.upsert("v1", {"name": "uncommitted"})
        seen_during = _on_other_thread(lambda: store.vehicles.get("v1"))
    seen_after = _on_other_thread(lambda: store.vehicles.get("v1"))
    assert seen_during is None
    assert seen_after is not None
    assert seen_after.name == "uncommitted"


def test_reader_inside_transaction_sees_its_own_uncommitted_rows(store: storage.Store) -> None:
    with store.transaction() as conn:
        store.vehicles.upsert("v1", {"name": "mine"})
        assert store.reader() is conn
        vehicle = store.vehicles.get("v1")
        assert vehicle is not None
        assert vehicle.name == "mine"
        assert store.vehicles.count() == 1


def test_reader_for_new_thread_after_close_raises_store_closed(tmp_path: Path) -> None:
    closed = storage.Store(tmp_path / "fleet.sqlite")
    closed.vehicles.upsert("v1", {"name": "x"})
    closed.close()

    def read() -> object:
        return closed.vehicles.get("v1")

    with pytest.raises(StoreClosed, match="closed"):
        _on_other_thread(read)
    with pytest.raises(StoreClosed):
        closed.reader()
