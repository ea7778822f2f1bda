"""Reads what a Yjs update (v1 encoding) would insert, without applying it to any document.

The sync socket runs every incoming update through `check_update` before merge: a value outside
the value policy (sync.values), a shared type the tenant document never uses (Y.Text, XML,
sub-documents, binary) or an unknown top-level name refuses the whole update, and the sender's
socket is closed with the reason. Once merged, a CRDT update can never be taken back, so this is
the only place such content can be stopped.

The format is Yjs' `writeStructs`/`writeDeleteSet` over lib0 encoding. An overwrite of a map
key carries its parent implicitly (through its origin item), so keys and top-level names are
checked where the update names them, and values wherever they appear.
"""

from __future__ import annotations

import struct

from sync.schema import COLLECTIONS
from sync.values import (
    MAX_DEPTH,
    MAX_ITEMS,
    ValuePolicyError,
    check_key,
    check_record_id,
    check_value,
    json_pointer,
    loads,
)

__all__ = ["MalformedUpdate", "check_update"]

# The top-level shared types of a tenant document (ARCHITECTURE.md, "The tenant document").
ROOT_NAMES = frozenset({"vehicles", "drivers", "routes", "geofences", "meta"})

_BIT6, _BIT7, _BIT8, _BITS5 = 0x20, 0x40, 0x80, 0x1F
_TYPE_YMAP = 1
_TYPE_NAMES = {0: "Y.Array", 1: "Y.Map", 2: "Y.Text", 3: "Y.XmlElement", 4: "Y.XmlFragment",
               5: "Y.XmlHook", 6: "Y.XmlText"}  # fmt: skip
_CONTENT_NAMES = {3: "binary content", 4: "Y.Text content", 5: "an embed", 6: "text formatting",
                  9: "a sub-document"}  # fmt: skip


class MalformedUpdate(ValueError):
    """The bytes do not decode as a Yjs v1 update."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedUpdate("update ends early")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def var_uint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedUpdate("number longer than 64 bits")

    def var_int(self) -> int:
        byte = self.u8()
        value = byte & 0x3F
        negative = bool(byte & 0x40)
        shift = 6
        while byte & 0x80:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise MalformedUpdate("integer longer than 64 bits")
        return -value if negative else value

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > len(self.data):
            raise MalformedUpdate(f"update announces {length} bytes but has {len(self.data) - self.pos}")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def var_bytes(self) -> bytes:
        return self.take(self.var_uint())

    def var_string(self, pointer: str) -> str:
        try:
            text = self.var_bytes().decode("utf-8")  # strict: encoded surrogates fail here
        except UnicodeDecodeError:
            raise ValuePolicyError(pointer, "string is not valid UTF-8") from None
        return text


def _read_any(reader: _Reader, where: str) -> object:
    """lib0's readAny, building the value with a stack of its own: depth and size are checked
    before descending, so a hostile nesting costs one step per level and never recursion. The
    value rules themselves (numbers, strings, keys) are check_value's, applied afterwards."""
    root: list[object] = []
    # (container being filled, values it still expects)
    stack: list[tuple[list[object] | dict[str, object], list[int]]] = [(root, [1])]
    while stack:
        container, remaining = stack[-1]
        if remaining[0] == 0:
            stack.pop()
            continue
        remaining[0] -= 1
        key = reader.var_string(where) if isinstance(container, dict) else ""
        tag = reader.u8()
        value: object
        if tag == 126:
            value = None
        elif tag == 125:
            value = reader.var_int()
        elif tag == 124:
            value = struct.unpack(">f", reader.take(4))[0]
        elif tag == 123:
            value = struct.unpack(">d", reader.take(8))[0]
        elif tag == 122:
            value = struct.unpack(">q", reader.take(8))[0]
        elif tag in (121, 120):
            value = tag == 120
        elif tag == 119:
            value = reader.var_string(where)
        elif tag in (118, 117):
            if len(stack) > MAX_DEPTH:  # the root list is not a level of the value
                raise ValuePolicyError(where, f"nested deeper than {MAX_DEPTH} levels")
            count = reader.var_uint()
            if count > MAX_ITEMS:
                raise ValuePolicyError(where, f"{count} elements exceed {MAX_ITEMS}")
            value = {} if tag == 118 else []
            stack.append((value, [count]))  # type: ignore[arg-type]
        elif tag == 127:
            raise ValuePolicyError(where, "undefined is not a JSON value")
        elif tag == 116:
            raise ValuePolicyError(where, "binary data is not a JSON value")
        else:
            raise MalformedUpdate(f"unknown value tag {tag}")
        if isinstance(container, dict):
            container[key] = value
        else:
            container.append(value)
    return root[0]


def _check_item(reader: _Reader, info: int, types: dict[tuple[int, int], str], item_id: tuple[int, int]) -> int:
    """Check one item; return its length in clock ticks. `types` maps the ids of the Y.Maps this
    update creates to their pointers, so errors inside a new record name the record."""
    where = ""
    if info & _BIT8:  # origin
        reader.var_uint()
        reader.var_uint()
    if info & _BIT7:  # right origin
        reader.var_uint()
        reader.var_uint()
    if not info & (_BIT7 | _BIT8):  # no origin: the parent is written out
        if reader.var_uint() == 1:
            name = reader.var_string("")
            if name not in ROOT_NAMES:
                known = ", ".join(sorted(ROOT_NAMES))
                raise ValuePolicyError(json_pointer(name[:100]), f"unknown top-level name; the document has {known}")
            where = json_pointer(name)
        else:
            where = types.get((reader.var_uint(), reader.var_uint()), "")
        if info & _BIT6:  # the map key this item sets
            key = reader.var_string(where)
            parent, where = where, where + json_pointer(key[:200])
            if parent.count("/") == 1 and parent[1:] in COLLECTIONS:
                check_record_id(key, where)  # a record's id
            else:
                check_key(key, where)
    content = info & _BITS5
    if content == 1:  # deleted content
        return reader.var_uint()
    if content == 2:  # JSON strings (old clients)
        count = reader.var_uint()
        for _ in range(count):
            text = reader.var_string(where)
            if text != "undefined":
                loads(text)
        return count
    if content == 7:  # a shared type
        type_ref = reader.var_uint()
        if type_ref != _TYPE_YMAP:
            raise ValuePolicyError(where, f"{_TYPE_NAMES.get(type_ref, 'an unknown type')} is not used by "
                                          "the tenant document; records are Y.Maps of JSON values")
        if where.count("/") > 2:  # /collection/record is the only place for a Y.Map
            raise ValuePolicyError(where, "a record's fields are JSON values, not nested Y.Maps")
        types[item_id] = where
        return 1
    if content == 8:  # JSON values
        count = reader.var_uint()
        for _ in range(count):
            check_value(_read_any(reader, where), where)
        return count
    if content in _CONTENT_NAMES:
        raise ValuePolicyError(where, f"{_CONTENT_NAMES[content]} is not used by the tenant document")
    raise MalformedUpdate(f"unknown content type {content}")


def check_update(update: bytes) -> None:
    """Raise ValuePolicyError for content outside the policy, MalformedUpdate for bytes that do
    not decode; return quietly for an update that may be merged."""
    reader = _Reader(update)
    types: dict[tuple[int, int], str] = {}
    for _ in range(reader.var_uint()):  # one run of structs per client
        structs = reader.var_uint()
        client = reader.var_uint()
        clock = reader.var_uint()
        for _ in range(structs):
            info = reader.u8()
            if info & _BITS5 in (0, 10):  # GC and skip: a length only
                clock += reader.var_uint()
            else:
                clock += _check_item(reader, info, types, (client, clock))
    for _ in range(reader.var_uint()):  # the delete set
        reader.var_uint()
        for _ in range(reader.var_uint()):
            reader.var_uint()
            reader.var_uint()
    if reader.pos != len(update):
        raise MalformedUpdate(f"{len(update) - reader.pos} bytes after the end of the update")
