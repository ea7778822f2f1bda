"""The y-websocket wire protocol plus WebHost's opt-in durable-ack extension.

Standard messages: SYNC (step 1, step 2, update), AWARENESS, AUTH (permission denied),
QUERY_AWARENESS. The extension is message type 100, sent only to clients that connected with
`?acks=1`; stock y-websocket clients never receive it:
  [100, 0]        HELLO: this server confirms commits
  [100, 1, n]     COMMITTED: the first n data messages (sync step 2 or update) this
                  connection sent are committed to the server's database
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pycrdt import YMessageType, YSyncMessageType, create_sync_message, write_var_uint
from pycrdt import get_state as update_state_vector

from sync.values import ValuePolicyError
from sync.yupdate import MalformedUpdate, check_update

__all__ = [
    "MSG_ACK", "AckKind", "Message", "MessageKind", "ProtocolError", "ack_committed", "ack_hello",
    "awareness_message", "create_sync_message", "parse", "permission_denied", "sync_step1", "sync_step2",
    "update_message", "validate_update",
]

MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3
MSG_ACK = 100


class AckKind(IntEnum):
    HELLO = 0
    COMMITTED = 1


class MessageKind(IntEnum):
    SYNC_STEP1 = 0
    SYNC_STEP2 = 1
    SYNC_UPDATE = 2
    AWARENESS = 3
    QUERY_AWARENESS = 4
    PERMISSION_DENIED = 5
    ACK_HELLO = 6
    ACK_COMMITTED = 7


class ProtocolError(ValueError):
    """A frame that does not decode as a y-websocket message."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: MessageKind
    payload: bytes = b""  # state vector, update or awareness bytes
    count: int = 0  # ACK_COMMITTED only
    reason: str = ""  # PERMISSION_DENIED only


def _frame(*parts: bytes) -> bytes:
    return b"".join(parts)


def _var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def _sync_frame(sync_type: YSyncMessageType, payload: bytes) -> bytes:
    return _frame(write_var_uint(YMessageType.SYNC), write_var_uint(sync_type), _var_bytes(payload))


def sync_step1(state_vector: bytes) -> bytes:
    return _sync_frame(YSyncMessageType.SYNC_STEP1, state_vector)


def sync_step2(update: bytes) -> bytes:
    return _sync_frame(YSyncMessageType.SYNC_STEP2, update)


def update_message(update: bytes) -> bytes:
    return _sync_frame(YSyncMessageType.SYNC_UPDATE, update)


def awareness_message(payload: bytes) -> bytes:
    return _frame(write_var_uint(YMessageType.AWARENESS), _var_bytes(payload))


def permission_denied(reason: str) -> bytes:
    # Not pycrdt's Encoder.write_var_string: it prefixes the character count, while lib0's
    # readVarString (and parse() below) read a UTF-8 byte count, so any non-ASCII reason broke.
    # 0 is y-protocols/auth's messagePermissionDenied.
    return _frame(write_var_uint(MSG_AUTH), write_var_uint(0), _var_bytes(reason.encode()))


def ack_hello() -> bytes:
    return write_var_uint(MSG_ACK) + write_var_uint(AckKind.HELLO)


def ack_committed(count: int) -> bytes:
    return write_var_uint(MSG_ACK) + write_var_uint(AckKind.COMMITTED) + write_var_uint(count)


class _Reader:
    """A strict lib0 decoder: every length is checked against what is left of the frame."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def var_uint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise ProtocolError("frame ends inside a number")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ProtocolError("number longer than 64 bits")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        if self.pos + length > len(self.data):
            raise ProtocolError(f"frame announces {length} bytes but has {len(self.data) - self.pos}")
        chunk = self.data[self.pos:self.pos + length]
        self.pos += length
        return chunk

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc


_SYNC_KINDS = {0: MessageKind.SYNC_STEP1, 1: MessageKind.SYNC_STEP2, 2: MessageKind.SYNC_UPDATE}


def parse(frame: bytes) -> Message:
    """Decode one frame, or raise ProtocolError saying why it is not a valid message."""
    if not isinstance(frame, (bytes, bytearray)) or not frame:
        raise ProtocolError("empty or non-binary frame")
    reader = _Reader(bytes(frame))
    msg_type = reader.var_uint()
    if msg_type == YMessageType.SYNC:
        sub = reader.var_uint()
        if sub not in _SYNC_KINDS:
            raise ProtocolError(f"unknown sync message type {sub}")
        return Message(_SYNC_KINDS[sub], reader.var_bytes())
    if msg_type == YMessageType.AWARENESS:
        return Message(MessageKind.AWARENESS, reader.var_bytes())
    if msg_type == MSG_QUERY_AWARENESS:
        return Message(MessageKind.QUERY_AWARENESS)
    if msg_type == MSG_AUTH:
        reader.var_uint()
        return Message(MessageKind.PERMISSION_DENIED, reason=reader.var_string())
    if msg_type == MSG_ACK:
        sub = reader.var_uint()
        if sub == AckKind.HELLO:
            return Message(MessageKind.ACK_HELLO)
        if sub == AckKind.COMMITTED:
            return Message(MessageKind.ACK_COMMITTED, count=reader.var_uint())
        raise ProtocolError(f"unknown ack message type {sub}")
    raise ProtocolError(f"unknown message type {msg_type}")


def validate_update(update: bytes) -> None:
    """Raise ProtocolError unless the bytes decode as a Yjs update whose content the value policy
    allows (checked before any merge: sync/yupdate.py, docs/sync.md)."""
    # Our own reader first: yrs decodes nested values recursively, so a hostile nesting depth
    # would overflow its stack (a segfault, not an exception) before any check could run.
    try:
        check_update(update)
    except ValuePolicyError as exc:
        raise ProtocolError(f"refused before merge: {exc}") from exc
    except MalformedUpdate as exc:
        raise ProtocolError(f"update does not decode: {exc}") from exc
    try:
        update_state_vector(update)
    except Exception as exc:
        raise ProtocolError(f"update does not decode: {exc}") from exc
