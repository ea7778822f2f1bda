"""Geofence, overspeed and route events: deduplicated, validated, read newest first."""

from __future__ import annotations

import pytest

import storage
from storage.events import Event, UnknownEventKind


def test_add_many_skips_events_already_stored(store: storage.Store) -> None:
    enter = Event("v1", "geofence_enter", 100.0, geofence_id="g1", lon=13.4, lat=52.5)
    deviate = Event("v1", "route_deviation", 110.0, route_id="r1")
    assert store.events.add_many([enter, enter, deviate]) == 2
    assert store.events.add_many([enter, deviate]) == 0
    # Another target at the same time is a different event.
    assert store.events.add(Event("v1", "geofence_enter", 100.0, geofence_id="g2")) is True
    assert store.scalar("SELECT count(*) FROM events") == 3


def test_events_without_geofence_or_route_are_deduplicated_too(store: storage.Store) -> None:
    overspeed = Event("v1", "overspeed", 100.0, speed_kph=92.0)
    assert store.events.add(overspeed) is True
    assert store.events.add(overspeed) is False
    assert store.events.add_many([overspeed, Event("v1", "overspeed", 100.0, speed_kph=95.0)]) == 0
    assert store.events.add(Event("v1", "overspeed", 101.0)) is True
    assert store.scalar("SELECT count(*) FROM events") == 2


def test_unknown_kind_raises_and_writes_nothing(store: storage.Store) -> None:
    valid = Event("v1", "overspeed", 100.0, speed_kph=90.0)
    with pytest.raises(UnknownEventKind, match="harsh_braking"):
        store.events.add_many([valid, Event("v1", "harsh_braking", 101.0)])
    assert store.scalar("SELECT count(*) FROM events") == 0
    assert store.events.recent() == []


def test_recent_filters_by_vehicle_and_since_newest_first(store: storage.Store) -> None:
    store.events.add_many([
        Event("v1", "geofence_enter", 100.0, geofence_id="g1"),
        Event("v1", "geofence_exit", 300.0, geofence_id="g1"),
        Event("v1", "overspeed", 200.0, speed_kph=99.0),
        Event("v2", "overspeed", 250.0, speed_kph=88.0, source="server"),
    ])
    assert [(e.vehicle_id, e.event_time) for e in store.events.recent()] == [
        ("v1", 300.0), ("v2", 250.0), ("v1", 200.0), ("v1", 100.0),
    ]
    assert [e.event_time for e in store.events.recent(vehicle_id="v1")] == [300.0, 200.0, 100.0]
    assert [e.kind for e in store.events.recent(vehicle_id="v1", since=200.0)] == ["geofence_exit", "overspeed"]
    assert [e.vehicle_id for e in store.events.recent(since=250.0)] == ["v1", "v2"]
    assert [e.event_time for e in store.events.recent(limit=2)] == [300.0, 250.0]


def test_event_fields_round_trip(store: storage.Store) -> None:
    event = Event("v1", "route_return", 123.5, route_id="r1", lon=13.4, lat=52.5, speed_kph=30.0,
                  attributes={"distance_m": 12.5, "corridor_m": 100}, source="server")
    store.events.add(event)
    assert store.events.recent() == [event]
