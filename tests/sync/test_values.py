"""The value policy (sync/values.py): what a record may hold, with a JSON pointer to what it may not."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_KEY_CHARS,
    MAX_STRING_CHARS,
    ValuePolicyError,
    check_fields,
    check_record_id,
    check_value,
    json_pointer,
    loads,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10),
                      inner, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_every_storable_json_value_passes(value: object) -> None:
    check_value(value)


@pytest.mark.parametrize(("value", "pointer", "reason"), [
    ({"name": "a\x00b"}, "/name", "NUL"),
    ({"name": "\ud800"}, "/name", "surrogate"),
    ({"stops": [{"lat": 2**64}]}, "/stops/0/lat", "64-bit"),
    ({"stops": [{"lat": -(2**63) - 1}]}, "/stops/0/lat", "64-bit"),
    ({"speed": math.nan}, "/speed", "not finite"),
    ({"speed": -math.inf}, "/speed", "not finite"),
    ({"notes": "x" * (MAX_STRING_CHARS + 1)}, "/notes", "exceeds"),
    ({"a/b": {"~": b"raw"}}, "/a~1b/~0", "bytes is not a JSON value"),
    ({"k": {"": 1}}, "/k/", "key is empty"),
    ({"k": {"x" * (MAX_KEY_CHARS + 1): 1}}, "/k/" + "x" * (MAX_KEY_CHARS + 1), "exceeds"),
    ({"k": {"bell\x07": 1}}, "/k/bell\x07", "control character"),
])
def test_values_outside_the_policy_are_refused_with_a_pointer(value: dict[str, object], pointer: str,
                                                              reason: str) -> None:
    with pytest.raises(ValuePolicyError) as caught:
        check_fields(value)
    assert caught.value.pointer == pointer
    assert reason in caught.value.reason


def test_nesting_is_refused_past_the_limit_without_recursion() -> None:
    value: object = 0
    for _ in range(100_000):  # far past the interpreter's recursion limit
        value = [value]
    with pytest.raises(ValuePolicyError, match=f"nested deeper than {MAX_DEPTH}"):
        check_value(value)
    shallow: object = 0
    for _ in range(MAX_DEPTH):
        shallow = [shallow]
    check_value(shallow)


@pytest.mark.parametrize("record_id", ["6f1c2a90-3e1b-4d7a-9c55-0b1e2f3a4b5c", "r1", "van:42", "a.b_c~d-e"])
def test_uuids_and_slugs_are_record_ids(record_id: str) -> None:
    check_record_id(record_id)


@pytest.mark.parametrize("record_id", ["", "has space", "new\nline", "ümlaut", "x" * 129, "-leading", "a/b", 7])
def test_other_record_ids_are_refused(record_id: object) -> None:
    with pytest.raises(ValuePolicyError, match="record id"):
        check_record_id(record_id)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),  # orjson's own limit, no Python recursion
    (b"[" * 20 + b"]" * 20, "nested deeper"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"a": "\\ud800"}', "not valid JSON"),
    (b'{"a": "\\u0000"}', "NUL"),
    (b'{"a": 18446744073709551615}', "64-bit"),
    (b"1" + b"0" * 5000, "not valid JSON"),
])
def test_loads_parses_and_applies_the_policy(raw: bytes, reason: str) -> None:
    with pytest.raises(ValuePolicyError, match=reason):
        loads(raw)
    assert loads(b'{"name": "Van", "stops": [{"lon": 1.5, "lat": 2}]}') == {
        "name": "Van", "stops": [{"lon": 1.5, "lat": 2}]}


def test_pointers_escape_tilde_and_slash() -> None:
    assert json_pointer("a/b", "c~d", 3) == "/a~1b/c~0d/3"


def test_the_shared_edit_services_refuse_unstorable_values_before_touching_the_document() -> None:
    from sync.document import FleetDocument
    from sync.services import create_record, update_record
    from sync.validation import ValidationError

    document = FleetDocument()
    with pytest.raises(ValidationError, match=r"name: string contains a NUL character \(at /name\)"):
        create_record(document, "drivers", {"name": "a\x00b"})
    with pytest.raises(ValidationError, match="record id"):
        create_record(document, "drivers", {"name": "Dana"}, record_id="bad id")
    record_id = create_record(document, "drivers", {"name": "Dana"})
    with pytest.raises(ValidationError, match="64-bit"):
        update_record(document, "drivers", record_id, {"notes": {"n": 2**70}})
    assert document.record("drivers", record_id) is not None
    assert document.record("drivers", record_id)["name"] == "Dana"  # type: ignore[index]
    assert len(document.ids("drivers")) == 1


@pytest.mark.parametrize("literal", [b"36893488147419103232", b"-9223372036854775809", b"9" * 30, b"1" + b"0" * 4000])
def test_loads_refuses_integers_orjson_would_quietly_turn_into_floats(literal: bytes) -> None:
    with pytest.raises(ValuePolicyError, match=r"64-bit|not valid JSON") as caught:
        loads(b'{"stops": [{"lat": ' + literal + b"}]}")
    assert caught.value.pointer in ("/stops/0/lat", "")
    assert loads(b'{"n": 9223372036854775807, "f": 0.12345678901234567890123}')["n"] == 2**63 - 1
