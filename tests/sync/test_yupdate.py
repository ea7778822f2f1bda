"""Updates are inspected before merge (sync/yupdate.py): content outside the value policy, shared
types the tenant document never uses and unknown top-level names are refused, whoever encoded
them: pycrdt, the stock `yjs` package, or raw lib0 bytes no library would write."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from sync import protocol
from sync.document import FleetDocument
from sync.values import MAX_DEPTH, ValuePolicyError
from sync.yupdate import MalformedUpdate, check_update

from .hostile_updates import (
    any_value,
    deeply_nested,
    raw_root_entry,
    record_update,
    shared_type_values,
    var_int,
)
from .test_values import json_values

JS = Path(__file__).resolve().parents[1] / "js"


@given(st.dictionaries(st.sampled_from(["name", "plate", "notes", "stops", "speed_limit_kph", "x_extra"]),
                       json_values, max_size=5))
@settings(max_examples=150)
def test_every_policy_conforming_record_passes(fields: dict[str, Any]) -> None:
    update = record_update("vehicles", "6f1c2a90-3e1b-4d7a-9c55-0b1e2f3a4b5c", lambda r: r.update(fields))
    check_update(update)
    protocol.validate_update(update)


def test_the_projects_own_documents_pass() -> None:
    document = FleetDocument()
    document.ensure_meta()
    document.put_record("routes", "r-1", {
        "name": "Tour", "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.5, 52.6]]},
        "stops": [{"name": "A", "lon": 13.4, "lat": 52.5}]})
    document.put_record("geofences", "g-1", {
        "name": "Depot", "geometry": {"type": "Point", "coordinates": [13.4, 52.5]}, "radius_m": 150.0,
        "active": True})
    state = document.get_state()
    document.set_fields("routes", "r-1", {"name": "Tour 2", "corridor_m": 50})
    document.delete_record("geofences", "g-1")
    check_update(document.full_update())
    check_update(document.get_update(state))


@pytest.mark.parametrize(("value", "reason"), [
    ("a\x00b", "NUL"),
    (math.nan, "not finite"),
    (math.inf, "not finite"),
    ({"deep": 1, "a\x01": 2}, "control character"),
])
def test_pycrdt_values_outside_the_policy_are_refused_with_the_record_pointer(value: Any, reason: str) -> None:
    update = record_update("drivers", "d-1", lambda r: r.__setitem__("notes", value))
    with pytest.raises(ValuePolicyError, match=reason) as caught:
        check_update(update)
    assert caught.value.pointer.startswith("/drivers/d-1/notes")
    with pytest.raises(protocol.ProtocolError, match="refused before merge: /drivers/d-1/notes"):
        protocol.validate_update(update)


@pytest.mark.parametrize("kind", sorted(shared_type_values()))
def test_shared_types_as_field_values_are_refused(kind: str) -> None:
    update = record_update("geofences", "g-1", lambda r: r.__setitem__("notes", shared_type_values()[kind]()))
    with pytest.raises(ValuePolicyError) as caught:
        check_update(update)
    assert caught.value.pointer == "/geofences/g-1/notes"


def test_unknown_top_level_names_are_refused() -> None:
    doc = Doc()
    doc.get("scratch", type=Map)["a"] = 1
    with pytest.raises(ValuePolicyError, match="unknown top-level name"):
        check_update(doc.get_update())


@pytest.mark.parametrize(("encoded", "reason"), [
    (b"\x7d" + var_int(2**64), "64-bit"),
    (b"\x7d" + var_int(-(2**63) - 1), "64-bit"),
    (deeply_nested(100_000), f"nested deeper than {MAX_DEPTH}"),
    (any_value({"a": "\ud800"}), "not valid UTF-8"),
    (any_value(b"\xff\xfe"), "not valid UTF-8"),
    (b"\x7f", "undefined"),
    (b"\x74" + b"\x01\x00", "binary"),
])
def test_raw_lib0_values_no_library_writes_are_refused(encoded: bytes, reason: str) -> None:
    with pytest.raises(ValuePolicyError, match=reason):
        check_update(raw_root_entry("meta", "schema_version", encoded))


@pytest.mark.parametrize("key", ["x" * 200_000, "bad\nid", "", "a/b"])
def test_record_ids_outside_the_rules_are_refused(key: str) -> None:
    with pytest.raises(ValuePolicyError, match="record id"):
        check_update(raw_root_entry("vehicles", key, any_value(1)))


@pytest.mark.parametrize("cut", [1, 5, 12])
def test_truncated_updates_are_malformed(cut: int) -> None:
    update = record_update("vehicles", "v-1", lambda r: r.__setitem__("plate", "B 1"))
    with pytest.raises(MalformedUpdate):
        check_update(update[:-cut])


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedUpdate, match="after the end"):
        check_update(record_update("vehicles", "v-1", lambda r: None) + b"\x00")


def stock_yjs_cases() -> dict[str, bytes]:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "yjs").exists():
        pytest.fail("node and tests/js/node_modules are required (make test installs them)")
    result = subprocess.run([node, str(JS / "hostile_updates.mjs")], capture_output=True, text=True,
                            timeout=60, check=True)
    return {name: base64.b64decode(data) for name, data in json.loads(result.stdout).items()}


@pytest.mark.node
def test_updates_written_by_the_stock_yjs_package_are_refused_or_passed_as_they_should() -> None:
    cases = stock_yjs_cases()
    protocol.validate_update(cases.pop("ok_plain_record"))
    expected = {
        "nul_in_name": "NUL", "nested_5000": "nested deeper", "nan": "not finite", "infinity": "not finite",
        "undefined_value": "undefined", "binary_value": "binary", "y_text_field": "Y.Text",
        "y_array_field": "Y.Array", "y_xml_field": "Y.XmlElement", "subdocument_field": "sub-document",
        "nested_y_map": "not nested Y.Maps", "text_record": "Y.Text", "unknown_root": "unknown top-level name",
        "id_200kb": "record id", "id_with_newline": "record id",
    }
    assert set(cases) == set(expected)
    for name, update in cases.items():
        with pytest.raises(protocol.ProtocolError, match="refused before merge") as caught:
            protocol.validate_update(update)
        assert expected[name] in str(caught.value), (name, str(caught.value))
