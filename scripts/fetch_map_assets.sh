#!/usr/bin/env bash
# Copies Leaflet, leaflet.markercluster and leaflet-draw dist files from their npm packages into
# resources/leaflet/. Run it only to change versions: the copied files are committed, so the
# app and its tests never need npm or a network.
set -euo pipefail

LEAFLET=1.9.4
MARKERCLUSTER=1.5.3
DRAW=1.0.4

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/resources/leaflet"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "leaflet@$LEAFLET" "leaflet.markercluster@$MARKERCLUSTER" "leaflet-draw@$DRAW" >/dev/null
for tgz in *.tgz; do
  mkdir -p "${tgz%.tgz}"
  tar xzf "$tgz" -C "${tgz%.tgz}"
done

rm -rf "$dest"
mkdir -p "$dest/images" "$dest/draw/images"
cp "leaflet-$LEAFLET/package/dist/leaflet.js" "leaflet-$LEAFLET/package/dist/leaflet.css" "$dest/"
cp "leaflet-$LEAFLET/package/dist/images/"*.png "$dest/images/"
cp "leaflet-$LEAFLET/package/LICENSE" "$dest/LICENSE-leaflet"
cp "leaflet.markercluster-$MARKERCLUSTER/package/dist/leaflet.markercluster.js" \
   "leaflet.markercluster-$MARKERCLUSTER/package/dist/MarkerCluster.css" \
   "leaflet.markercluster-$MARKERCLUSTER/package/dist/MarkerCluster.Default.css" "$dest/"
cp "leaflet.markercluster-$MARKERCLUSTER/package/MIT-LICENCE.txt" "$dest/LICENSE-markercluster"
# leaflet.draw.css refers to images/…, relative to itself: keep it beside its own images folder.
cp "leaflet-draw-$DRAW/package/dist/leaflet.draw.js" "leaflet-draw-$DRAW/package/dist/leaflet.draw.css" "$dest/draw/"
cp "leaflet-draw-$DRAW/package/dist/images/"* "$dest/draw/images/"
# leaflet-draw's package ships no licence file; its package.json declares the licence.
node -e 'const p = require(process.argv[1]); console.log(`${p.name} ${p.version}: ${p.license} licence (Copyright Jacob Toye and contributors)`)' \
  "$work/leaflet-draw-$DRAW/package/package.json" > "$dest/LICENSE-draw"
printf 'leaflet %s\nleaflet.markercluster %s\nleaflet-draw %s\n' "$LEAFLET" "$MARKERCLUSTER" "$DRAW" > "$dest/VERSIONS"
echo "copied into $dest:"
(cd "$dest" && find . -type f | sort)
