"""The value policy: what a record may hold, checked wherever a value enters the system.

REST bodies, imports, OsmAnd attributes and, before merge, every update on the sync socket go
through these checks, so everything inside a tenant document can be stored by Postgres (text
without NUL, bigint, jsonb), SpatiaLite and every Yjs replica, and projected without surprises.
A value outside the policy is refused with a ValuePolicyError naming a JSON pointer (RFC 6901).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = [
    "ID_PATTERN",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_KEY_CHARS",
    "MAX_STRING_CHARS",
    "ValuePolicyError",
    "check_fields",
    "check_key",
    "check_record_id",
    "check_string",
    "check_value",
    "json_pointer",
    "loads",
]

# Nesting of lists and objects inside one field value. A MultiPolygon's coordinates need 4 and
# route stops 2; 16 leaves room without letting a value recurse a parser to death.
MAX_DEPTH = 16
# Characters in one string (notes are the longest real values).
MAX_STRING_CHARS = 100_000
# Characters in a field name or an object key.
MAX_KEY_CHARS = 128
# Elements of one list or object: a ring may have 10,000 vertices (validation.MAX_VERTICES).
MAX_ITEMS = 100_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Record ids travel in URLs, headers and file names: UUIDs and short slugs, nothing else.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~-]{0,127}")

# C0 controls other than tab, newline and carriage return, plus DEL: never in a name or a key.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ValuePolicyError(ValueError):
    """A value the system cannot store or process; `pointer` says where it is."""

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(pointer, reason)
        self.pointer = pointer
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.reason}"


def json_pointer(*parts: str | int) -> str:
    """An RFC 6901 pointer to the value reached by these keys and indexes."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def check_string(text: str, pointer: str, *, limit: int = MAX_STRING_CHARS) -> None:
    if len(text) > limit:
        raise ValuePolicyError(pointer, f"string of {len(text)} characters exceeds {limit}")
    if "\x00" in text:
        raise ValuePolicyError(pointer, "string contains a NUL character")
    if _SURROGATE.search(text):
        raise ValuePolicyError(pointer, "string contains a lone UTF-16 surrogate")


def check_key(key: object, pointer: str) -> None:
    """A field name or object key: a short string without control characters."""
    if not isinstance(key, str):
        raise ValuePolicyError(pointer, f"key must be a string, not {type(key).__name__}")
    if not key:
        raise ValuePolicyError(pointer, "key is empty")
    check_string(key, pointer, limit=MAX_KEY_CHARS)
    if _CONTROL.search(key):
        raise ValuePolicyError(pointer, "key contains a control character")


def check_record_id(record_id: object, pointer: str = "/id") -> None:
    if not isinstance(record_id, str) or not ID_PATTERN.fullmatch(record_id):
        shown = repr(record_id)[:40]
        raise ValuePolicyError(
            pointer, f"record id {shown} must be 1-128 characters of A-Z a-z 0-9 . _ : ~ - (a UUID, say)"
        )


def _children(value: Mapping[str, object] | list[object] | tuple[object, ...]) -> Iterator[tuple[str | int, object]]:
    if isinstance(value, Mapping):
        yield from value.items()
    else:
        yield from enumerate(value)


def check_value(value: object, pointer: str = "") -> None:
    """Raise ValuePolicyError unless `value` is a JSON value the system can store.

    JSON values are None, bool, int within int64, finite float, str, lists and string-keyed
    dicts of them, nested at most MAX_DEPTH deep. The walk uses its own stack, so a hostile
    nesting depth costs one step per level, never the interpreter's recursion limit.
    """
    stack: list[tuple[object, str, int]] = [(value, pointer, 0)]
    while stack:
        current, where, depth = stack.pop()
        if current is None or isinstance(current, bool):
            continue
        if isinstance(current, int):
            if not INT64_MIN <= current <= INT64_MAX:
                raise ValuePolicyError(where, "integer outside the 64-bit range")
        elif isinstance(current, float):
            if not math.isfinite(current):
                raise ValuePolicyError(where, f"number {current} is not finite")
        elif isinstance(current, str):
            check_string(current, where)
        elif isinstance(current, (list, tuple, Mapping)):
            if depth >= MAX_DEPTH:
                raise ValuePolicyError(where, f"nested deeper than {MAX_DEPTH} levels")
            if len(current) > MAX_ITEMS:
                raise ValuePolicyError(where, f"{len(current)} elements exceed {MAX_ITEMS}")
            is_object = isinstance(current, Mapping)
            for key, child in _children(current):
                child_pointer = where + json_pointer(key)
                if is_object:
                    check_key(key, child_pointer)
                stack.append((child, child_pointer, depth + 1))
        else:
            raise ValuePolicyError(where, f"{type(current).__name__} is not a JSON value")


def check_fields(fields: Mapping[str, Any], pointer: str = "") -> None:
    """A record's fields: a mapping of field names to JSON values."""
    if not isinstance(fields, Mapping):
        raise ValuePolicyError(pointer, "a record must be an object of fields")
    if len(fields) > MAX_ITEMS:
        raise ValuePolicyError(pointer, f"{len(fields)} fields exceed {MAX_ITEMS}")
    for name, value in fields.items():
        where = pointer + json_pointer(name)
        check_key(name, where)
        check_value(value, where)


# An integer literal of 19 or more digits may lie outside int64, which orjson would silently
# turn into a float (2**65 becomes 3.6893488147419103e19); only then is the text parsed again.
_LONG_INTEGER = re.compile(r"\d{19,}")
_INT64_DIGITS = len(str(INT64_MAX))


def _exact_integer(literal: str) -> int:
    """parse_int for the second parse: out-of-range literals become out-of-range ints (which the
    policy refuses with their pointer) without converting thousands of digits."""
    digits = literal.lstrip("-")
    if len(digits) > _INT64_DIGITS:
        return -(INT64_MAX + 2) if literal.startswith("-") else INT64_MAX + 1
    return int(literal)


def loads(raw: bytes | str) -> Any:
    """Parse JSON text and apply the policy to the whole value.

    orjson rejects NaN/Infinity literals and lone surrogate escapes and stops at 1,024 levels
    without recursing in Python; check_value then applies the tighter limits. Raises
    ValuePolicyError (pointer "" for text that is not JSON at all).
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValuePolicyError("", f"not valid JSON: {exc}") from None
    check_value(value)
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    if _LONG_INTEGER.search(text):
        # Python's parser recurses, but check_value has already bounded the depth.
        check_value(json.loads(text, parse_int=_exact_integer))
    return value
