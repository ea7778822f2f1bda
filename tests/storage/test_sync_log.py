"""The local CRDT update log and the sync metadata."""

from __future__ import annotations

import storage


def test_append_assigns_increasing_seqs_and_entries_returns_them_in_order(store: storage.Store) -> None:
    seqs = [
        store.sync_log.append(b"local-1", "local"),
        store.sync_log.append(b"remote-1", "remote"),
        store.sync_log.append(b"local-2", "local"),
    ]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    entries = store.sync_log.entries()
    assert [(e.seq, e.payload, e.origin) for e in entries] == list(
        zip(seqs, [b"local-1", b"remote-1", b"local-2"], ["local", "remote", "local"], strict=True)
    )
    assert all(isinstance(e.payload, bytes) for e in entries)
    # Remote updates are already on the server; local ones wait for an ack.
    assert [e.acked for e in entries] == [False, True, False]
    assert [e.payload for e in store.sync_log.entries(after=seqs[0])] == [b"remote-1", b"local-2"]
    assert store.sync_log.size() == 3


def test_unacked_local_and_pending_count_shrink_when_acked(store: storage.Store) -> None:
    first = store.sync_log.append(b"a", "local")
    store.sync_log.append(b"r", "remote")
    second = store.sync_log.append(b"b", "local")
    assert [e.seq for e in store.sync_log.unacked_local()] == [first, second]
    assert store.sync_log.pending_count() == 2

    store.sync_log.mark_acked([first])

    assert [e.seq for e in store.sync_log.unacked_local()] == [second]
    assert store.sync_log.pending_count() == 1
    assert [e.acked for e in store.sync_log.entries()] == [True, True, False]
    store.sync_log.mark_acked([second])
    assert store.sync_log.unacked_local() == []
    assert store.sync_log.pending_count() == 0


def test_replace_with_snapshot_folds_earlier_rows_and_keeps_later_ones(store: storage.Store) -> None:
    seqs = [store.sync_log.append(f"u{i}".encode(), "remote") for i in range(4)]
    later = store.sync_log.append(b"local-later", "local")

    store.sync_log.replace_with_snapshot(seqs[2], b"snapshot")

    entries = store.sync_log.entries()
    assert [(e.seq, e.payload, e.origin) for e in entries] == [
        (seqs[2], b"snapshot", "snapshot"),
        (seqs[3], b"u3", "remote"),
        (later, b"local-later", "local"),
    ]
    assert entries[0].acked is True
    assert [e.seq for e in store.sync_log.unacked_local()] == [later]
    # Appends continue after the highest seq.
    assert store.sync_log.append(b"next", "local") > later


def test_meta_get_set_and_overwrite(store: storage.Store) -> None:
    assert store.sync_log.get_meta("tenant") is None
    assert store.sync_log.get_meta("tenant", "none-yet") == "none-yet"
    store.sync_log.set_meta("tenant", "acme")
    store.sync_log.set_meta("server", "https://fleet.example")
    assert store.sync_log.get_meta("tenant") == "acme"
    store.sync_log.set_meta("tenant", "globex")
    assert store.sync_log.get_meta("tenant") == "globex"
    assert store.sync_log.get_meta("server") == "https://fleet.example"
    assert store.scalar("SELECT count(*) FROM sync_meta") == 2


def test_log_and_meta_survive_reopening(store: storage.Store) -> None:
    seq = store.sync_log.append(b"\x00\xffbinary", "local")
    store.sync_log.set_meta("client_id", "c-1")
    store.close()
    with storage.Store(store.path) as reopened:
        assert [(e.seq, e.payload) for e in reopened.sync_log.entries()] == [(seq, b"\x00\xffbinary")]
        assert reopened.sync_log.get_meta("client_id") == "c-1"
