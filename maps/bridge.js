/* WebHost Fleet map bridge: the live layers Python drives through runJavaScript, and the drawn or
 * edited shapes it sends back over QWebChannel. Loaded inline by maps/page.py, after Leaflet,
 * leaflet.markercluster and leaflet-draw (all bundled; nothing here touches the network). */
(function () {
  "use strict";

  var MOVE_BATCH = 5000;          // vehicle moves applied per tick; the rest wait for the next tick
  var STATES = ["moving", "stopped", "offline", "invalid"];
  var KIND_COLOURS = { depot: "#1565c0", customer: "#2e7d32", restricted: "#c62828", other: "#6a1b9a" };

  var S = {
    map: null, cluster: null, markers: {}, markerCount: 0, icons: {},
    pending: {}, pendingCount: 0, scheduled: false, movesApplied: 0,
    editable: null, corridors: null, trackLayer: null, trackCoords: [], cursor: null, cursorIndex: -1,
    geofenceCount: 0, routeCount: 0, corridorCount: 0,
    tilesLoaded: 0, tileErrors: 0, py: null, pyQueue: [], readOnly: true, ready: false,
    messageBox: null, lastMessage: "", selected: null, fitted: false, followed: null,
    hidden: { routes: false, corridors: false, geofences: false }, stash: { routes: [], geofences: [] }
  };

  function toPython(method, args) {
    if (S.py) { S.py[method].apply(S.py, args); } else { S.pyQueue.push([method, args]); }
  }

  function icon(state) {
    if (!S.icons[state]) {
      S.icons[state] = L.divIcon({ className: "fleet-vehicle fleet-" + state, iconSize: [14, 14], html: "" });
    }
    return S.icons[state];
  }

  function metresPerPixel(lat, zoom) {
    return 40075016.686 * Math.abs(Math.cos(lat * Math.PI / 180)) / Math.pow(2, zoom + 8);
  }

  // -- set-up -------------------------------------------------------------------------------------

  window.fleetInit = function (map, options) {
    S.map = map;
    S.readOnly = !!options.readOnly;
    // markercluster needs the map's zoom range; folium only gives it to tile layers.
    map.setMinZoom(options.minZoom);
    map.setMaxZoom(options.maxZoom);
    S.cluster = L.markerClusterGroup({
      chunkedLoading: true, disableClusteringAtZoom: options.disableClusteringAtZoom || 16,
      showCoverageOnHover: false, spiderfyOnMaxZoom: true, maxClusterRadius: 60
    });
    S.corridors = L.featureGroup().addTo(map);
    S.editable = L.featureGroup().addTo(map);
    S.trackLayer = L.featureGroup().addTo(map);
    map.addLayer(S.cluster);

    var tiles = L.tileLayer(options.tileUrl, {
      minZoom: options.tileMinZoom || 0, maxZoom: options.maxZoom, maxNativeZoom: options.maxNativeZoom,
      attribution: options.attribution, bounds: options.tileBounds || null
    });
    tiles.on("tileload", function () { S.tilesLoaded += 1; });
    tiles.on("tileerror", function () { S.tileErrors += 1; });
    tiles.addTo(map);
    S.tiles = tiles;
    map.on("zoomend", resizeCorridors);
    // Only a user drags (panTo and setView never fire dragstart): the field window stops following.
    map.on("dragstart", function () { toPython("userMoved", []); });

    var Box = L.Control.extend({
      options: { position: "topright" },
      onAdd: function () {
        var div = L.DomUtil.create("div", "fleet-message");
        div.style.display = "none";
        L.DomEvent.disableClickPropagation(div);
        return div;
      }
    });
    var box = new Box();
    box.addTo(map);
    S.messageBox = box.getContainer();

    if (!S.readOnly && L.Control.Draw) {
      map.addControl(new L.Control.Draw({
        position: "topleft",
        edit: { featureGroup: S.editable, remove: true },
        draw: {
          polygon: { allowIntersection: false, showArea: false },
          circle: { showRadius: true, metric: true },
          polyline: { metric: true },
          rectangle: false, marker: false, circlemarker: false
        }
      }));
      map.on(L.Draw.Event.CREATED, function (e) {
        var kind = e.layerType === "polyline" ? "route" : "geofence";
        toPython("shapeDrawn", [kind, JSON.stringify(shapeOf(e.layer))]);
      });
      map.on(L.Draw.Event.EDITED, function (e) {
        e.layers.eachLayer(function (layer) {
          if (layer.fleet) {
            toPython("shapeEdited", [layer.fleet.collection, layer.fleet.id, JSON.stringify(shapeOf(layer))]);
          }
        });
      });
      map.on(L.Draw.Event.DELETED, function (e) {
        e.layers.eachLayer(function (layer) {
          if (layer.fleet) { toPython("shapeDeleted", [layer.fleet.collection, layer.fleet.id]); }
        });
      });
    }

    if (typeof QWebChannel !== "undefined" && typeof qt !== "undefined" && qt.webChannelTransport) {
      new QWebChannel(qt.webChannelTransport, function (channel) {
        S.py = channel.objects.fleet;
        S.pyQueue.forEach(function (call) { S.py[call[0]].apply(S.py, call[1]); });
        S.pyQueue = [];
        S.py.pageReady();
      });
    }
    S.ready = true;
  };

  // A drawn or edited layer as {geometry, radius_m}: a circle is a GeoJSON Point plus its radius.
  function shapeOf(layer) {
    if (layer instanceof L.Circle) {
      var c = layer.getLatLng();
      return { geometry: { type: "Point", coordinates: [c.lng, c.lat] }, radius_m: layer.getRadius() };
    }
    return { geometry: layer.toGeoJSON().geometry, radius_m: null };
  }

  // -- vehicles -------------------------------------------------------------------------------------

  function newMarker(v) {
    var marker = L.marker([v.lat, v.lon], { icon: icon(v.state), title: v.name || v.id, keyboard: false });
    marker.fleetId = v.id;
    marker.fleetState = v.state;
    marker.on("click", function () { toPython("vehicleClicked", [v.id]); });
    return marker;
  }

  // The whole fleet: adds, updates and removes markers so the map shows exactly this list.
  window.setVehicles = function (list) {
    var seen = {}, added = [], moved = [], removed = [];
    list.forEach(function (v) {
      if (v.lon === null || v.lat === null || v.lon === undefined) { return; }
      seen[v.id] = true;
      var m = S.markers[v.id];
      if (!m) {
        m = newMarker(v);
        S.markers[v.id] = m;
        added.push(m);
      } else {
        var ll = m.getLatLng();
        if (ll.lat !== v.lat || ll.lng !== v.lon) { moved.push([m, v.lat, v.lon]); }
        if (m.fleetState !== v.state) { m.fleetState = v.state; m.setIcon(icon(v.state)); }
        if (m.options.title !== v.name) { m.options.title = v.name; }
      }
    });
    Object.keys(S.markers).forEach(function (id) {
      if (!seen[id]) { removed.push(S.markers[id]); delete S.markers[id]; delete S.pending[id]; }
    });
    if (removed.length) { S.cluster.removeLayers(removed); }
    relocate(moved);
    if (added.length) { S.cluster.addLayers(added); }
    S.markerCount = Object.keys(S.markers).length;
    if (!S.fitted && S.markerCount) {
      // The first time there is a fleet: if none of it is in view (it works somewhere the
      // offline tiles do not cover), show the fleet rather than an empty map.
      S.fitted = true;
      var view = S.map.getBounds(), inView = false;
      Object.keys(S.markers).forEach(function (id) { inView = inView || view.contains(S.markers[id].getLatLng()); });
      if (!inView) { window.fitFleet(); }
    }
    return S.markerCount;
  };

  // Moving a clustered marker means taking it out of its cluster and putting it back.
  function relocate(moves) {
    if (!moves.length) { return; }
    var layers = moves.map(function (m) { return m[0]; });
    S.cluster.removeLayers(layers);
    moves.forEach(function (m) { m[0].setLatLng([m[1], m[2]]); });
    S.cluster.addLayers(layers);
  }

  // Live positions: [[id, lon, lat, state], ...]. Only the newest update per vehicle is kept, and at
  // most MOVE_BATCH are applied per tick, so a burst never blocks the page for long.
  window.moveVehicles = function (updates) {
    for (var i = 0; i < updates.length; i++) {
      var u = updates[i];
      if (!S.pending[u[0]]) { S.pendingCount += 1; }
      S.pending[u[0]] = u;
    }
    schedule();
    return S.pendingCount;
  };

  function schedule() {
    if (!S.scheduled && S.pendingCount) {
      S.scheduled = true;
      setTimeout(applyMoves, 0);
    }
  }

  function applyMoves() {
    S.scheduled = false;
    var ids = Object.keys(S.pending).slice(0, MOVE_BATCH), moves = [];
    ids.forEach(function (id) {
      var u = S.pending[id], m = S.markers[id];
      delete S.pending[id];
      S.pendingCount -= 1;
      if (!m) { return; }
      if (u[3] && m.fleetState !== u[3]) { m.fleetState = u[3]; m.setIcon(icon(u[3])); }
      moves.push([m, u[2], u[1]]);
    });
    relocate(moves);
    S.movesApplied += moves.length;
    schedule();
  }

  window.focusVehicle = function (id, zoom) {
    var m = S.markers[id];
    if (!m) { return false; }
    S.selected = id;
    S.map.setView(m.getLatLng(), Math.max(S.map.getZoom(), zoom || 16));
    return true;
  };

  // Field mode follows its own vehicle by the newest fix (the marker lags behind by a batch).
  window.followPosition = function (lon, lat) {
    S.followed = [lon, lat];
    S.map.panTo([lat, lon]);
    return true;
  };

  window.panToVehicle = function (id) {
    var m = S.markers[id];
    if (!m) { return false; }
    S.selected = id;
    S.map.panTo(m.getLatLng());
    return true;
  };

  // -- geofences and routes -------------------------------------------------------------------------

  function tagged(layer, props, collection) {
    layer.fleet = { collection: collection, id: props.id };
    var label = (props.name || props.id) + (props.invalid ? " \u26a0 " + props.invalid : "");
    layer.bindTooltip(label, { sticky: true });
    return layer;
  }

  function clearCollection(collection) {
    S.editable.eachLayer(function (layer) {
      if (layer.fleet && layer.fleet.collection === collection) { S.editable.removeLayer(layer); }
    });
    S.stash[collection] = [];
  }

  // A hidden layer's shapes wait in S.stash (routes, geofences) or off the map (corridors).
  function addShape(collection, layer) {
    if (S.hidden[collection]) { S.stash[collection].push(layer); } else { S.editable.addLayer(layer); }
  }

  window.setLayerVisible = function (name, visible) {
    if (!(name in S.hidden)) { return null; }
    S.hidden[name] = !visible;
    if (name === "corridors") {
      if (visible) { S.map.addLayer(S.corridors); resizeCorridors(); } else { S.map.removeLayer(S.corridors); }
      return visible;
    }
    if (visible) {
      S.stash[name].forEach(function (layer) { S.editable.addLayer(layer); });
      S.stash[name] = [];
    } else {
      var going = [];
      S.editable.eachLayer(function (layer) {
        if (layer.fleet && layer.fleet.collection === name) { going.push(layer); }
      });
      going.forEach(function (layer) { S.editable.removeLayer(layer); });
      S.stash[name] = S.stash[name].concat(going);
    }
    return visible;
  };

  function shownCount(collection) {
    var n = 0;
    if (!S.editable) { return 0; }
    S.editable.eachLayer(function (layer) { if (layer.fleet && layer.fleet.collection === collection) { n += 1; } });
    return n;
  }

  window.setGeofences = function (fc) {
    clearCollection("geofences");
    var n = 0;
    (fc.features || []).forEach(function (f) {
      var p = f.properties || {}, g = f.geometry, colour = p.invalid ? "#c62828" : (KIND_COLOURS[p.kind] || "#6a1b9a");
      var style = { color: colour, weight: 2, fillOpacity: p.active === false ? 0.05 : 0.18,
                    dashArray: p.invalid ? "6 4" : null };
      var layer;
      try {
        if (g.type === "Point") {
          if (!p.radius_m) { return; }
          layer = L.circle([g.coordinates[1], g.coordinates[0]], L.extend({ radius: p.radius_m }, style));
        } else {
          layer = L.GeoJSON.geometryToLayer(f, { style: style });
          if (layer.setStyle) { layer.setStyle(style); }
        }
      } catch (err) {
        return;  // a geometry Leaflet cannot draw: the record is flagged in the tables instead
      }
      addShape("geofences", tagged(layer, p, "geofences"));
      n += 1;
    });
    S.geofenceCount = n;
    return n;
  };

  window.setRoutes = function (fc) {
    clearCollection("routes");
    S.corridors.clearLayers();
    var n = 0;
    (fc.features || []).forEach(function (f) {
      var p = f.properties || {}, g = f.geometry;
      if (!g || g.type !== "LineString" || !g.coordinates || g.coordinates.length < 2) { return; }
      var latlngs;
      try {
        latlngs = g.coordinates.map(function (c) { return [c[1], c[0]]; });
      } catch (err) { return; }
      var colour = p.invalid ? "#c62828" : "#0277bd";
      var corridor = L.polyline(latlngs, { color: colour, opacity: 0.18, interactive: false, lineCap: "round",
                                           lineJoin: "round", weight: 4 });
      corridor.corridorM = p.corridor_m || 100;
      S.corridors.addLayer(corridor);
      var line = L.polyline(latlngs, { color: colour, weight: 3, dashArray: p.invalid ? "6 4" : null });
      addShape("routes", tagged(line, p, "routes"));
      n += 1;
    });
    S.routeCount = n;
    S.corridorCount = n;
    resizeCorridors();
    return n;
  };

  // A corridor is drawn as a translucent line as wide on the ground as 2 x corridor_m.
  function resizeCorridors() {
    if (!S.map) { return; }
    var zoom = S.map.getZoom(), lat = S.map.getCenter().lat;
    S.corridors.eachLayer(function (layer) {
      layer.setStyle({ weight: Math.max(3, 2 * layer.corridorM / metresPerPixel(lat, zoom)) });
    });
  }

  // -- history --------------------------------------------------------------------------------------

  window.showTrack = function (coords) {
    S.trackLayer.clearLayers();
    S.trackCoords = coords || [];
    S.cursor = null;
    S.cursorIndex = -1;
    if (!S.trackCoords.length) { return 0; }
    var latlngs = S.trackCoords.map(function (c) { return [c[1], c[0]]; });
    var line = L.polyline(latlngs, { color: "#ef6c00", weight: 4, opacity: 0.9 });
    S.trackLayer.addLayer(line);
    S.cursor = L.circleMarker(latlngs[0], { radius: 8, color: "#000", weight: 2, fillColor: "#ffeb3b",
                                           fillOpacity: 1 });
    S.trackLayer.addLayer(S.cursor);
    S.cursorIndex = 0;
    S.map.fitBounds(line.getBounds(), { padding: [30, 30], maxZoom: 17 });
    return S.trackCoords.length;
  };

  window.setCursor = function (i) {
    if (!S.cursor || !S.trackCoords.length) { return -1; }
    i = Math.max(0, Math.min(S.trackCoords.length - 1, i | 0));
    var c = S.trackCoords[i];
    S.cursor.setLatLng([c[1], c[0]]);
    S.cursorIndex = i;
    return i;
  };

  // -- messages and state -----------------------------------------------------------------------------

  window.showMessage = function (text, level) {
    S.lastMessage = text || "";
    if (!S.messageBox) { return; }
    S.messageBox.textContent = S.lastMessage;
    S.messageBox.className = "fleet-message fleet-message-" + (level || "info");
    S.messageBox.style.display = S.lastMessage ? "block" : "none";
    clearTimeout(S.messageTimer);
    if (S.lastMessage) {
      S.messageTimer = setTimeout(function () { S.messageBox.style.display = "none"; }, 8000);
    }
  };

  // Everything a test or the self-test needs to know, as one JSON string.
  window.mapState = function () {
    var byState = {};
    STATES.forEach(function (s) { byState[s] = 0; });
    Object.keys(S.markers).forEach(function (id) { byState[S.markers[id].fleetState] += 1; });
    var c = S.map ? S.map.getCenter() : { lat: 0, lng: 0 };
    return JSON.stringify({
      ready: S.ready, channel: !!S.py, readOnly: S.readOnly,
      markers: S.markerCount, byState: byState, pendingMoves: S.pendingCount, movesApplied: S.movesApplied,
      tilesLoaded: S.tilesLoaded, tileErrors: S.tileErrors,
      layers: { vehicles: S.markerCount, geofences: S.geofenceCount, routes: S.routeCount,
                corridors: S.corridorCount, track: S.trackCoords.length },
      visible: { routes: !S.hidden.routes, corridors: !S.hidden.corridors, geofences: !S.hidden.geofences },
      shown: { routes: shownCount("routes"), geofences: shownCount("geofences"),
               corridors: S.map && S.map.hasLayer(S.corridors) ? S.corridors.getLayers().length : 0 },
      followed: S.followed,
      cursor: S.cursorIndex, zoom: S.map ? S.map.getZoom() : null, center: [c.lng, c.lat],
      drawControl: !!document.querySelector(".leaflet-draw"), message: S.lastMessage,
      cursorLonLat: S.cursor ? [S.cursor.getLatLng().lng, S.cursor.getLatLng().lat] : null,
      markerLonLat: function () {
        if (!S.selected || !S.markers[S.selected]) { return null; }
        var ll = S.markers[S.selected].getLatLng();
        return [ll.lng, ll.lat];
      }()
    });
  };

  window.markerPosition = function (id) {
    var m = S.markers[id];
    if (!m) { return null; }
    var ll = m.getLatLng();
    return JSON.stringify([ll.lng, ll.lat, m.fleetState]);
  };

  // The Leaflet map itself, for debugging in the web inspector and for tests that simulate drawing.
  window.fleetMap = function () { return S.map; };

  window.fitFleet = function () {
    var ids = Object.keys(S.markers);
    if (!ids.length) { return false; }
    S.map.fitBounds(S.cluster.getBounds(), { padding: [20, 20], maxZoom: 15 });
    return true;
  };
}());
