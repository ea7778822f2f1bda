"""The map page in a real QWebEngineView, offscreen: Leaflet loads with no network, offline tiles
draw, markers appear and move, and drawing on the map goes through validated edits."""

from __future__ import annotations

import math
from typing import Any

from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.fleetmap import FleetMapController
from app.mapview import MapView
from maps.layers import feature_collection, geofence_feature, route_feature

from .conftest import MAP_TIMEOUT_MS, evaluate, map_state, wait_map

CENTRE = (24.944, 60.171)


def markers(n: int, state: str = "moving") -> list[dict[str, Any]]:
    return [{"id": f"v{i}", "name": f"Van {i}", "lon": CENTRE[0] + (i % 100) * 1e-4,
             "lat": CENTRE[1] + (i // 100) * 1e-4, "state": state} for i in range(n)]


def test_leaflet_loads_offline_and_tiles_come_from_the_mbtiles_file(qtbot: QtBot, ready_map: MapView) -> None:
    assert evaluate(qtbot, ready_map, "typeof L") == "object"
    assert evaluate(qtbot, ready_map, "typeof L.markerClusterGroup + ' ' + typeof L.Control.Draw") \
        == "function function"
    state = wait_map(qtbot, ready_map, lambda s: s["tilesLoaded"] > 0)
    assert state["tileErrors"] == 0
    assert ready_map.tile_handler.served > 0
    assert ready_map.recorder.requests() == []


def test_markers_appear_coloured_by_state(qtbot: QtBot, ready_map: MapView) -> None:
    fleet = [*markers(3),
             {"id": "s", "name": "S", "lon": 24.945, "lat": 60.172, "state": "stopped"},
             {"id": "o", "name": "O", "lon": 24.946, "lat": 60.172, "state": "offline"},
             {"id": "x", "name": "X", "lon": 24.947, "lat": 60.172, "state": "invalid"},
             {"id": "nofix", "name": "No fix", "lon": None, "lat": None, "state": "offline"}]
    ready_map.call("setVehicles", fleet)
    state = wait_map(qtbot, ready_map, lambda s: s["markers"] == 6)
    assert state["byState"] == {"moving": 3, "stopped": 1, "offline": 1, "invalid": 1}
    ready_map.call("setVehicles", fleet[:2])
    assert wait_map(qtbot, ready_map, lambda s: s["markers"] == 2)["byState"]["stopped"] == 0


def test_a_fleet_outside_the_offline_tiles_is_brought_into_view(qtbot: QtBot, ready_map: MapView) -> None:
    berlin = [{"id": f"b{i}", "name": f"B{i}", "lon": 13.38 + i * 0.01, "lat": 52.51 + i * 0.005, "state": "moving"}
              for i in range(5)]
    ready_map.call("setVehicles", berlin)
    state = wait_map(qtbot, ready_map, lambda s: s["markers"] == 5 and 13.3 < s["center"][0] < 13.5)
    assert 52.4 < state["center"][1] < 52.6


def test_five_thousand_markers_move_without_reloading_the_page(qtbot: QtBot, ready_map: MapView) -> None:
    ready_map.call("setVehicles", markers(5000))
    wait_map(qtbot, ready_map, lambda s: s["markers"] == 5000)
    evaluate(qtbot, ready_map, "window.__sameDocument = 'yes'")
    for round_ in range(1, 4):
        ready_map.call("moveVehicles", [[f"v{i}", CENTRE[0] + 0.001 * round_, CENTRE[1] + i * 1e-6,
                                         "stopped" if i % 2 else "moving"] for i in range(5000)])
    state = wait_map(qtbot, ready_map, lambda s: s["pendingMoves"] == 0 and s["movesApplied"] >= 5000)
    assert state["markers"] == 5000
    assert state["byState"] == {"moving": 2500, "stopped": 2500, "offline": 0, "invalid": 0}
    lon, lat, marker_state = evaluate(qtbot, ready_map, "markerPosition('v7')")
    assert (round(lon, 6), round(lat, 6), marker_state) == (round(CENTRE[0] + 0.003, 6), round(CENTRE[1] + 7e-6, 6),
                                                            "stopped")
    assert evaluate(qtbot, ready_map, "String(window.__sameDocument)") == "yes"


def test_geofences_routes_with_corridors_and_a_track(qtbot: QtBot, ready_map: MapView) -> None:
    square = {"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.945, 60.17], [24.945, 60.172], [24.94, 60.17]]]}
    ready_map.call("setGeofences", feature_collection([
        geofence_feature("g1", {"name": "Depot", "geometry": square, "kind": "depot"}, None),
        geofence_feature("g2", {"name": "Circle", "geometry": {"type": "Point", "coordinates": [24.95, 60.17]},
                                "radius_m": 80}, None)]))
    line = {"type": "LineString", "coordinates": [[24.94, 60.168], [24.95, 60.175]]}
    ready_map.call("setRoutes", feature_collection([route_feature("r1", {"name": "R", "geometry": line,
                                                                         "corridor_m": 200}, None)]))
    wait_map(qtbot, ready_map, lambda s: s["layers"]["corridors"] == 1)

    def corridor_width_m() -> float:
        # The corridor is as wide on the ground as 2 x corridor_m, whatever the zoom.
        answer = evaluate(qtbot, ready_map, "fleetMap().getZoom() + ',' + fleetMap().getCenter().lat + ',' + "
                                            "Object.values(fleetMap()._layers).filter(l => l.corridorM)[0]"
                                            ".options.weight")
        zoom, lat, pixels = (float(v) for v in str(answer).split(","))
        return pixels * 40075016.686 * math.cos(math.radians(lat)) / 2 ** (zoom + 8)

    assert abs(corridor_width_m() - 400) < 20
    ready_map.call("fleetMap().setZoom", 17)
    qtbot.waitUntil(lambda: abs(corridor_width_m() - 400) < 20, timeout=10_000)
    ready_map.call("showTrack", [[24.94, 60.168], [24.945, 60.171], [24.95, 60.175]])
    ready_map.call("setCursor", 2)
    state = wait_map(qtbot, ready_map, lambda s: s["layers"]["track"] == 3 and s["cursor"] == 2)
    assert state["layers"] == {"vehicles": 0, "geofences": 2, "routes": 1, "corridors": 1, "track": 3}
    assert state["cursorLonLat"] == [24.95, 60.175]


def test_a_polygon_drawn_on_the_map_is_saved_through_the_dialog(qtbot: QtBot, ctx: FleetContext) -> None:
    view = MapView()
    qtbot.addWidget(view)
    view.show()
    controller = FleetMapController(ctx, view)
    with qtbot.waitSignal(view.ready, timeout=MAP_TIMEOUT_MS):
        pass
    view.call("fleetMap().fire(L.Draw.Event.CREATED, {layerType: 'polygon', layer: L.polygon("
              "[[60.170, 24.940], [60.171, 24.940], [60.171, 24.942]])})")
    qtbot.waitUntil(lambda: controller.dialog is not None, timeout=10_000)
    dialog = controller.dialog
    assert dialog is not None
    assert '"Polygon"' in dialog.editors["geometry"].widget.toPlainText()  # type: ignore[attr-defined]
    dialog.save()  # no name yet: refused, next to the name field, nothing written
    assert dialog.problem_text("name") == "is required"
    assert ctx.store.geofences.count() == 0
    dialog.editors["name"].widget.setText("Drawn yard")  # type: ignore[attr-defined]
    with qtbot.waitSignal(dialog.saved, timeout=10_000):
        dialog.save()
    assert [g.name for g in ctx.store.geofences.list()] == ["Drawn yard"]
    wait_map(qtbot, view, lambda s: s["layers"]["geofences"] == 1)


def test_a_circle_edited_into_a_bad_shape_is_refused_with_a_message_on_the_map(
        qtbot: QtBot, ctx: FleetContext) -> None:
    square = {"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.945, 60.17], [24.945, 60.172],
                                                  [24.94, 60.172], [24.94, 60.17]]]}
    fence = ctx.fleet.create("geofences", {"name": "Yard", "geometry": square})
    view = MapView()
    qtbot.addWidget(view)
    view.show()
    controller = FleetMapController(ctx, view)
    with qtbot.waitSignal(view.ready, timeout=MAP_TIMEOUT_MS):
        pass
    wait_map(qtbot, view, lambda s: s["layers"]["geofences"] == 1)
    # A bow-tie: the edit the user made crosses itself, which validation refuses.
    with qtbot.waitSignal(controller.edit_failed, timeout=10_000) as failed:
        view.call("(function(){var g = L.featureGroup(); var p = L.polygon([[60.170, 24.940], [60.172, 24.945],"
                  " [60.170, 24.945], [60.172, 24.940]]); p.fleet = {collection: 'geofences', id: '" + fence + "'};"
                  " g.addLayer(p); fleetMap().fire(L.Draw.Event.EDITED, {layers: g});})()")
    assert failed.args is not None and "geometry" in failed.args[0]
    state = wait_map(qtbot, view, lambda s: s["message"].startswith("Not saved"))
    assert "geometry" in state["message"]
    stored = ctx.store.geofences.get(fence)
    assert stored is not None and stored.data["geometry"] == square


def test_read_only_maps_offer_no_drawing(qtbot: QtBot, qapp: Any) -> None:
    from app.mapview import options_for_tiles
    from maps.assets import demo_mbtiles_path

    view = MapView(options_for_tiles(demo_mbtiles_path(), read_only=True))
    qtbot.addWidget(view)
    view.show()
    with qtbot.waitSignal(view.ready, timeout=MAP_TIMEOUT_MS):
        pass
    state = map_state(qtbot, view)
    assert state["readOnly"] is True and state["drawControl"] is False
