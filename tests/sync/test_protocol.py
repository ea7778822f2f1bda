"""The wire protocol: every frame we build parses back, stock pycrdt frames parse, and anything
malformed is refused with a reason instead of crashing the reader."""

from __future__ import annotations

import pytest
from pycrdt import (
    Doc,
    Map,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    write_var_uint,
)

from sync import protocol
from sync.document import EMPTY_UPDATE, FleetDocument
from sync.protocol import MSG_ACK, Message, MessageKind, ProtocolError, parse, validate_update


def _sample() -> tuple[bytes, bytes]:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "v1", {"name": "Van", "plate": "AB-1"})
    return document.get_update(), document.get_state()


UPDATE, STATE = _sample()


def sample_update() -> bytes:
    return UPDATE


def sample_state() -> bytes:
    return STATE


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (lambda: protocol.sync_step1(sample_state()), lambda: Message(MessageKind.SYNC_STEP1, sample_state())),
        (lambda: protocol.sync_step2(sample_update()), lambda: Message(MessageKind.SYNC_STEP2, sample_update())),
        (lambda: protocol.update_message(sample_update()), lambda: Message(MessageKind.SYNC_UPDATE, sample_update())),
        (lambda: protocol.sync_step2(EMPTY_UPDATE), lambda: Message(MessageKind.SYNC_STEP2, EMPTY_UPDATE)),
        (lambda: protocol.awareness_message(b"\x01\x02\x03"), lambda: Message(MessageKind.AWARENESS, b"\x01\x02\x03")),
        (lambda: protocol.permission_denied("read-only: no writes"),
         lambda: Message(MessageKind.PERMISSION_DENIED, reason="read-only: no writes")),
        (lambda: protocol.permission_denied("nur lesen, Zugriff für Fahrer verweigert"),
         lambda: Message(MessageKind.PERMISSION_DENIED, reason="nur lesen, Zugriff für Fahrer verweigert")),
        (lambda: protocol.ack_hello(), lambda: Message(MessageKind.ACK_HELLO)),
        (lambda: protocol.ack_committed(0), lambda: Message(MessageKind.ACK_COMMITTED, count=0)),
        (lambda: protocol.ack_committed(1), lambda: Message(MessageKind.ACK_COMMITTED, count=1)),
        (lambda: protocol.ack_committed(300), lambda: Message(MessageKind.ACK_COMMITTED, count=300)),
        (lambda: protocol.ack_committed(2**40), lambda: Message(MessageKind.ACK_COMMITTED, count=2**40)),
        (lambda: write_var_uint(3), lambda: Message(MessageKind.QUERY_AWARENESS)),
    ],
    ids=["step1", "step2", "update", "empty-step2", "awareness", "denied", "denied-utf8", "hello", "ack-0",
         "ack-1", "ack-300", "ack-huge", "query-awareness"],
)
def test_every_message_builder_round_trips_through_parse(frame, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse(frame()) == expected()


def test_ack_frames_use_the_extension_message_type() -> None:
    assert protocol.ack_hello()[0] == MSG_ACK
    assert protocol.ack_committed(5)[0] == MSG_ACK
    assert MSG_ACK not in {t.value for t in YMessageType}


def test_permission_denied_counts_utf8_bytes_like_lib0() -> None:
    reason = "lecture seule: accès refusé"
    encoded = reason.encode()
    assert len(encoded) != len(reason)
    assert protocol.permission_denied(reason) == b"\x02\x00" + write_var_uint(len(encoded)) + encoded


def test_parse_accepts_bytearray() -> None:
    assert parse(bytearray(protocol.ack_committed(7))) == Message(MessageKind.ACK_COMMITTED, count=7)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty"),
        (b"\x80", "ends inside a number"),
        (b"\x00", "ends inside a number"),
        (b"\x00\x00", "ends inside a number"),
        (b"\x00\x07\x00", "unknown sync message type 7"),
        (b"\x00\x02\x05ab", "announces 5 bytes but has 2"),
        (b"\x00\x01\xff\xff\xff\xff\x0f", "announces"),
        (b"\x01\x04abc", "announces 4 bytes but has 3"),
        (b"\x02\x00\x03\xff\xfe\xfd", "not UTF-8"),
        (b"\x02\x00", "ends inside a number"),
        (b"\x64", "ends inside a number"),
        (b"\x64\x09", "unknown ack message type 9"),
        (b"\x64\x01", "ends inside a number"),
        (b"\x09", "unknown message type 9"),
        (b"\xff" * 12, "longer than 64 bits"),
    ],
    ids=["empty", "cut-varint", "sync-no-subtype", "sync-no-length", "bad-sync-subtype", "short-payload",
         "huge-length", "short-awareness", "denied-not-utf8", "denied-no-string", "ack-no-subtype",
         "bad-ack-subtype", "ack-no-count", "unknown-type", "endless-varint"],
)
def test_truncated_or_garbage_frames_raise_protocol_error_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse(frame)


def test_every_truncation_of_a_real_frame_is_refused() -> None:
    frame = protocol.sync_step2(sample_update())
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            parse(frame[:cut])


def test_a_non_binary_frame_is_refused() -> None:
    with pytest.raises(ProtocolError, match="non-binary"):
        parse("text frame")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff\xff\xff", b"\x01\x01\x01\x01\x01\x01", b"\x05", b"not a yjs update at all", b""],
    ids=["ff", "ones", "short", "text", "empty"],
)
def test_validate_update_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(ProtocolError, match="update does not decode"):
        validate_update(garbage)


def test_validate_update_accepts_real_and_empty_updates() -> None:
    validate_update(sample_update())
    validate_update(EMPTY_UPDATE)
    # A delta computed against another replica's state is still a valid update.
    validate_update(FleetDocument().get_update(sample_state()))


def test_stock_pycrdt_sync_and_update_frames_parse() -> None:
    doc: Doc = Doc()
    doc["vehicles"] = vehicles = Map()
    captured: list[bytes] = []
    doc.observe(lambda event: captured.append(event.update))
    vehicles["v1"] = Map({"name": "Van"})

    step1 = create_sync_message(doc)
    message = parse(step1)
    assert message.kind == MessageKind.SYNC_STEP1
    assert message.payload == doc.get_state()

    update = captured[-1]
    message = parse(create_update_message(update))
    assert message == Message(MessageKind.SYNC_UPDATE, update)
    validate_update(message.payload)

    replica = FleetDocument()
    replica.apply_update(message.payload)
    assert replica.record("vehicles", "v1") == {"name": "Van"}


def test_stock_frames_and_our_builders_are_byte_identical() -> None:
    update = sample_update()
    assert protocol.update_message(update) == create_update_message(update)
    doc: Doc = Doc()
    doc.apply_update(update)
    assert protocol.sync_step1(doc.get_state()) == create_sync_message(doc)
    stock_step2 = bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_var_uint(len(update)) + update
    assert protocol.sync_step2(update) == stock_step2
