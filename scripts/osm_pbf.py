"""A small pure-Python reader for OpenStreetMap PBF extracts (nodes with tags, ways), enough to
render the demo tiles. Relations are skipped. Stdlib only: the protobuf wire format is simple.

Format: a sequence of (4-byte big-endian length, BlobHeader, Blob); each OSMData blob is a
zlib-compressed PrimitiveBlock of string table + groups of dense nodes and ways.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value): varints as int, length-delimited as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield number, wire, buf[pos:pos + length]
            pos += length
        elif wire == 1:
            yield number, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 5:
            yield number, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _packed(buf: bytes) -> list[int]:
    out, pos, end = [], 0, len(buf)
    while pos < end:
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _packed_sint_delta(buf: bytes) -> list[int]:
    out, total = [], 0
    for raw in _packed(buf):
        total += _zigzag(raw)
        out.append(total)
    return out


@dataclass
class OsmData:
    nodes: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (lon, lat)
    tagged_nodes: list[tuple[float, float, dict[str, str]]] = field(default_factory=list)
    ways: list[tuple[list[int], dict[str, str]]] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None

    def way_coords(self, refs: list[int]) -> list[tuple[float, float]]:
        return [self.nodes[r] for r in refs if r in self.nodes]


def _blobs(data: bytes) -> Iterator[tuple[str, bytes]]:
    pos = 0
    while pos < len(data):
        (header_len,) = struct.unpack(">I", data[pos:pos + 4])
        pos += 4
        header = data[pos:pos + header_len]
        pos += header_len
        kind, size = "", 0
        for number, _, value in _fields(header):
            if number == 1 and isinstance(value, bytes):
                kind = value.decode()
            elif number == 3 and isinstance(value, int):
                size = value
        blob = data[pos:pos + size]
        pos += size
        raw = b""
        for number, _, value in _fields(blob):
            if number == 1 and isinstance(value, bytes):
                raw = value
            elif number == 3 and isinstance(value, bytes):
                raw = zlib.decompress(value)
        yield kind, raw


def _header_bbox(raw: bytes) -> tuple[float, float, float, float] | None:
    for number, _, value in _fields(raw):
        if number == 1 and isinstance(value, bytes):
            box = {n: _zigzag(v) for n, _, v in _fields(value) if isinstance(v, int)}
            # HeaderBBox: left=1, right=2, top=3, bottom=4, in nanodegrees.
            return box[1] * 1e-9, box[4] * 1e-9, box[2] * 1e-9, box[3] * 1e-9
    return None


def _tags(keys: list[int], vals: list[int], strings: list[str]) -> dict[str, str]:
    return {strings[k]: strings[v] for k, v in zip(keys, vals, strict=False)}


def _block(raw: bytes, out: OsmData) -> None:
    strings: list[str] = []
    groups: list[bytes] = []
    granularity, lat_offset, lon_offset = 100, 0, 0
    for number, _, value in _fields(raw):
        if number == 1 and isinstance(value, bytes):
            strings = [s.decode("utf-8", "replace") for n, _, s in _fields(value) if n == 1 and isinstance(s, bytes)]
        elif number == 2 and isinstance(value, bytes):
            groups.append(value)
        elif number == 17 and isinstance(value, int):
            granularity = value
        elif number == 19 and isinstance(value, int):
            lat_offset = value
        elif number == 20 and isinstance(value, int):
            lon_offset = value

    def coord(offset: int, raw_value: int) -> float:
        return (offset + granularity * raw_value) * 1e-9

    for group in groups:
        for number, _, value in _fields(group):
            if not isinstance(value, bytes):
                continue
            if number == 2:  # DenseNodes
                ids: list[int] = []
                lats: list[int] = []
                lons: list[int] = []
                keys_vals: list[int] = []
                for n, _, v in _fields(value):
                    if not isinstance(v, bytes):
                        continue
                    if n == 1:
                        ids = _packed_sint_delta(v)
                    elif n == 8:
                        lats = _packed_sint_delta(v)
                    elif n == 9:
                        lons = _packed_sint_delta(v)
                    elif n == 10:
                        keys_vals = _packed(v)
                kv = 0
                for i, node_id in enumerate(ids):
                    lon, lat = coord(lon_offset, lons[i]), coord(lat_offset, lats[i])
                    out.nodes[node_id] = (lon, lat)
                    if keys_vals:
                        tags: dict[str, str] = {}
                        while keys_vals[kv] != 0:
                            tags[strings[keys_vals[kv]]] = strings[keys_vals[kv + 1]]
                            kv += 2
                        kv += 1
                        if tags:
                            out.tagged_nodes.append((lon, lat, tags))
            elif number == 1:  # plain Node
                node_id = lat_raw = lon_raw = 0
                keys: list[int] = []
                vals: list[int] = []
                for n, _, v in _fields(value):
                    if n == 1 and isinstance(v, int):
                        node_id = _zigzag(v)
                    elif n == 8 and isinstance(v, int):
                        lat_raw = _zigzag(v)
                    elif n == 9 and isinstance(v, int):
                        lon_raw = _zigzag(v)
                    elif n == 2 and isinstance(v, bytes):
                        keys = _packed(v)
                    elif n == 3 and isinstance(v, bytes):
                        vals = _packed(v)
                lon, lat = coord(lon_offset, lon_raw), coord(lat_offset, lat_raw)
                out.nodes[node_id] = (lon, lat)
                if keys:
                    out.tagged_nodes.append((lon, lat, _tags(keys, vals, strings)))
            elif number == 3:  # Way
                keys, vals, refs = [], [], []
                for n, _, v in _fields(value):
                    if not isinstance(v, bytes):
                        continue
                    if n == 2:
                        keys = _packed(v)
                    elif n == 3:
                        vals = _packed(v)
                    elif n == 8:
                        refs = _packed_sint_delta(v)
                if keys:
                    out.ways.append((refs, _tags(keys, vals, strings)))


def read_pbf(path: str | Path) -> OsmData:
    out = OsmData()
    for kind, raw in _blobs(Path(path).read_bytes()):
        if kind == "OSMHeader":
            out.bbox = _header_bbox(raw)
        elif kind == "OSMData":
            _block(raw, out)
    return out
