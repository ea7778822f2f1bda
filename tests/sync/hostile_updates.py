"""Builders of hostile Yjs updates for the value-policy tests: raw lib0 bytes for what neither
pycrdt nor yjs will encode (integers past 64 bits, invalid UTF-8, nesting deeper than any parser
should follow), and pycrdt-built updates for what a stock client can send."""

from __future__ import annotations

import struct
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment


def var_uint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def var_int(value: int) -> bytes:
    negative, value = value < 0, abs(value)
    first = (value & 0x3F) | (0x40 if negative else 0)
    value >>= 6
    out = bytearray([first | (0x80 if value else 0)])
    while value:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def any_value(value: Any) -> bytes:
    """lib0 writeAny for JSON-ish values (floats always as float64)."""
    if value is None:
        return b"\x7e"
    if value is True:
        return b"\x78"
    if value is False:
        return b"\x79"
    if isinstance(value, int):
        return b"\x7d" + var_int(value)
    if isinstance(value, float):
        return b"\x7b" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"\x77" + var_bytes(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):  # a raw, already encoded string payload (invalid UTF-8, say)
        return b"\x77" + var_bytes(value)
    if isinstance(value, dict):
        return b"\x76" + var_uint(len(value)) + b"".join(
            var_bytes(str(k).encode()) + any_value(v) for k, v in value.items())
    if isinstance(value, list):
        return b"\x75" + var_uint(len(value)) + b"".join(any_value(v) for v in value)
    raise TypeError(type(value))


def deeply_nested(levels: int) -> bytes:
    """`levels` nested one-element lists around 0, encoded without recursion."""
    return b"\x75\x01" * levels + b"\x7d\x00"


def raw_root_entry(root: str, key: str | bytes, encoded_value: bytes, client: int = 4242) -> bytes:
    """An update setting root-map `root`[key] to one encoded lib0 value."""
    key_bytes = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    info = 0x08 | 0x20  # ContentAny, with a parent-sub (map key)
    item = bytes([info]) + var_uint(1) + var_bytes(root.encode()) + var_bytes(key_bytes) + var_uint(1) + encoded_value
    return var_uint(1) + var_uint(1) + var_uint(client) + var_uint(0) + item + var_uint(0)


def record_update(collection: str, record_id: str, set_field: Any) -> bytes:
    """A stock-client style update: a new Y.Map record whose fields `set_field(record)` fills."""
    doc = Doc()
    records = doc.get(collection, type=Map)
    record = Map()
    records[record_id] = record
    record["name"] = "Hostile"
    set_field(record)
    return doc.get_update()


def shared_type_values() -> dict[str, Any]:
    """Field values a stock client can set that are not JSON: every other shared type."""
    return {
        "text": lambda: Text("typed text"),
        "array": lambda: Array([1, 2]),
        "xml_fragment_with_element": lambda: XmlFragment([XmlElement("p")]),
        "xml_fragment": lambda: XmlFragment(),
        "nested_map": lambda: Map({"a": 1}),  # records are maps of JSON values, one level only
        "subdoc": lambda: Doc(),
    }
