"""The position outbox: recording fixes, uploading them in batches, and spatial/time queries."""

from __future__ import annotations

import time

import pytest

import storage
from storage.positions import Fix, OutboxCounts
from storage.repository import BadBBox


def _fix(t: float, lon: float = 13.4, lat: float = 52.5, *, device: str = "dev-1", vehicle: str | None = "v1") -> Fix:
    return Fix(device, t, lat, lon, vehicle_id=vehicle)


def _last_error(store: storage.Store, fid: int) -> str | None:
    return store.scalar("SELECT last_error FROM positions WHERE fid = ?", (fid,))  # type: ignore[no-any-return]


def test_add_many_returns_number_of_new_fixes_and_skips_duplicates(store: storage.Store) -> None:
    assert store.positions.add_many([_fix(1.0), _fix(2.0), _fix(1.0)]) == 2
    # Same device and time is the same fix; another device at the same time is not.
    assert store.positions.add_many([_fix(2.0), _fix(3.0), _fix(2.0, device="dev-2")]) == 2
    assert store.positions.add_many([]) == 0
    assert store.scalar("SELECT count(*) FROM positions") == 4
    assert store.scalar("SELECT count(*) FROM positions_rtree") == 4


def test_add_reports_whether_the_fix_was_new(store: storage.Store) -> None:
    assert store.positions.add(_fix(1.0)) is True
    assert store.positions.add(_fix(1.0, lon=0.0)) is False
    [stored] = store.positions.pending_batch()
    assert stored.fix.lon == 13.4


def test_pending_batch_is_in_insertion_order_and_limited(store: storage.Store) -> None:
    store.positions.add_many([_fix(30.0), _fix(10.0), _fix(20.0)])
    batch = store.positions.pending_batch()
    assert [s.fix.fix_time for s in batch] == [30.0, 10.0, 20.0]
    assert [s.fid for s in batch] == sorted(s.fid for s in batch)
    assert all(s.upload_state == "pending" and s.attempts == 0 for s in batch)
    assert [s.fix.fix_time for s in store.positions.pending_batch(limit=2)] == [30.0, 10.0]


def test_upload_outcomes_are_reflected_in_counts(store: storage.Store) -> None:
    store.positions.add_many([_fix(float(t)) for t in range(5)])
    fids = [s.fid for s in store.positions.pending_batch()]
    assert store.positions.counts() == OutboxCounts(pending=5, uploaded=0, failed=0)

    store.positions.mark_uploaded(fids[:2])
    store.positions.mark_attempt_failed(fids[2:4], "timeout")
    store.positions.mark_rejected([(fids[4], "fix in the future")])

    assert store.positions.counts() == OutboxCounts(pending=2, uploaded=2, failed=1)
    assert [(s.fid, s.attempts) for s in store.positions.pending_batch()] == [(fids[2], 1), (fids[3], 1)]
    assert _last_error(store, fids[2]) == "timeout"
    assert _last_error(store, fids[4]) == "fix in the future"
    assert store.scalar("SELECT upload_state FROM positions WHERE fid = ?", (fids[4],)) == "failed"
    assert store.scalar("SELECT count(*) FROM positions WHERE uploaded_at IS NOT NULL") == 2


def test_failed_attempts_accumulate_and_upload_clears_the_error(store: storage.Store) -> None:
    store.positions.add(_fix(1.0))
    [fid] = [s.fid for s in store.positions.pending_batch()]
    store.positions.mark_attempt_failed([fid], "offline")
    store.positions.mark_attempt_failed([fid], "502 from server")
    [stored] = store.positions.pending_batch()
    assert stored.attempts == 2
    assert _last_error(store, fid) == "502 from server"
    store.positions.mark_uploaded([fid])
    assert _last_error(store, fid) is None
    assert store.positions.pending_batch() == []


def test_bbox_queries_include_edges_and_exclude_points_just_outside(store: storage.Store) -> None:
    bbox = (13.0, 52.0, 13.4, 52.6)
    store.positions.add_many([
        _fix(1.0, 13.0, 52.0),  # south-west corner
        _fix(2.0, 13.4, 52.6),  # north-east corner
        _fix(3.0, 13.2, 52.3),  # middle
        # Below the R*Tree's 32-bit resolution: only the exact test keeps these out.
        _fix(4.0, 13.4000001, 52.3),
        _fix(5.0, 13.2, 51.9999999),
        _fix(6.0, 14.0, 53.0),
    ])
    assert [s.fix.fix_time for s in store.positions.in_bbox(bbox)] == [1.0, 2.0, 3.0]
    assert store.positions.count_in_bbox(bbox) == 3
    assert [s.fix.fix_time for s in store.positions.in_bbox(bbox, limit=2)] == [1.0, 2.0]


def test_bbox_queries_reject_bad_bbox(store: storage.Store) -> None:
    with pytest.raises(BadBBox):
        store.positions.in_bbox((13.4, 52.0, 13.0, 52.6))
    with pytest.raises(BadBBox):
        store.positions.count_in_bbox((13.0, 52.0, 13.4))


def test_track_returns_one_vehicle_in_time_range_in_time_order(store: storage.Store) -> None:
    store.positions.add_many([
        _fix(30.0), _fix(10.0), _fix(20.0), _fix(40.0),
        _fix(20.0, device="dev-2", vehicle="v2"),
        _fix(25.0, device="dev-3", vehicle=None),
    ])
    assert [f.fix_time for f in store.positions.track("v1", 10.0, 30.0)] == [10.0, 20.0, 30.0]
    assert [f.vehicle_id for f in store.positions.track("v2", 0.0, 100.0)] == ["v2"]
    assert store.positions.track("v1", 41.0, 50.0) == []


def test_prune_uploaded_deletes_only_old_uploaded_fixes_and_their_index_rows(store: storage.Store) -> None:
    store.positions.add_many([_fix(float(t)) for t in range(6)])
    fids = [s.fid for s in store.positions.pending_batch()]
    store.positions.mark_uploaded(fids[:4])
    store.positions.mark_rejected([(fids[4], "bad")])
    old = time.time() - 7 * 86_400
    with store.transaction() as conn:  # two of the uploads happened a week ago
        conn.executemany("UPDATE positions SET uploaded_at = ? WHERE fid = ?", [(old, fids[0]), (old, fids[1])])

    assert store.positions.prune_uploaded(older_than=time.time() - 86_400) == 2

    remaining = {row[0] for row in store.query("SELECT fid FROM positions")}
    assert remaining == set(fids[2:])
    assert {row[0] for row in store.query("SELECT fid FROM positions_rtree")} == remaining
    assert store.scalar("SELECT count(*) FROM positions_rtree") == 4
    assert store.positions.counts() == OutboxCounts(pending=1, uploaded=2, failed=1)
    assert store.positions.prune_uploaded(older_than=time.time() - 86_400) == 0


def test_fix_fields_and_attributes_round_trip(store: storage.Store) -> None:
    fix = Fix("dev-9", 1_700_000_000.25, 52.52, 13.405, vehicle_id="v9", speed_kph=48.5, course=271.0,
              altitude=34.0, accuracy=3.5, attributes={"ignition": True, "sats": 9, "io": {"din1": 0}})
    bare = Fix("dev-9", 1_700_000_001.0, 52.53, 13.406)
    assert store.positions.add_many([fix, bare]) == 2
    assert [s.fix for s in store.positions.pending_batch()] == [fix, bare]
    assert store.positions.track("v9", 0.0, 2e9) == [fix]
