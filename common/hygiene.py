"""Input hygiene at the edge: values no handler of the suite can store or use.

The suite interceptor runs :func:`check_request` on every parsed request message (unary, and
each message of a stream) after authentication and before any handler code. It walks the
message against its descriptor and refuses, as INVALID_ARGUMENT with a BadRequest naming the
field path, the first of:

- ``NUL_IN_STRING``: a NUL character in any ``string`` field, map key or value, repeated
  element, ``google.protobuf.Struct`` key or ``Value.string_value``. PostgreSQL text cannot
  hold NUL, so such a value would fail deep inside a handler; ``bytes`` fields may hold it.
- ``TIMESTAMP_OUT_OF_RANGE``: a ``google.protobuf.Timestamp`` outside
  0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z or with nanos outside 0..999,999,999
  (the range of the Timestamp spec, of RFC 3339 text and of Python's datetime).
- ``DURATION_OUT_OF_RANGE``: a ``google.protobuf.Duration`` outside +-315,576,000,000 s
  (10,000 years), with ``|nanos|`` over 999,999,999, or with seconds and nanos of opposite
  signs (the Duration spec).
- ``NON_FINITE_NUMBER``: NaN or +-Infinity in a ``Value.number_value`` (JSON, and so a job
  payload or result, has no such numbers) and in every ``double``/``float`` field of a
  request: none of the suite's numeric request fields (frame rates, progress percentages,
  thumbnail times) has a meaning for them, and a comparison with NaN is always false, so a
  later range check would let it through.
- ``STRUCT_TOO_DEEP``: a Struct/ListValue nested deeper than :data:`MAX_STRUCT_DEPTH` levels
  (the outermost Struct of a field is level 1). Handlers convert Structs recursively (to
  JSON, to PostgreSQL jsonb); the bound keeps that far from any recursion limit. protobuf's
  own parser refuses messages nested more than 100 levels (about 33 Struct levels), so a
  deeper payload never parses: :func:`too_deep_in_wire` finds its field in the raw bytes.

Field paths: field names joined by ``.``, repeated elements as ``[i]``, map and Struct keys as
``.key`` (AIP-161), or ``.`key``` in backticks when the key is not an identifier (a backtick
in it doubled, control characters as ``\\uXXXX``, keys over 64 characters cut with ``…``;
a whole path over 1 KiB is cut too):
``job.payload.a.b``, ``jobs[3].schedule_time``, ``metadata.`a b```.

Cost: which fields of a message type can hold anything checked here is worked out once per
type (:func:`_plan`); a message type without strings, floats, Timestamps, Durations or
Structs is one dictionary lookup. The files service's upload data messages are not protobuf
messages at all by the time they arrive here (a ``memoryview``, see services/files/wire.py)
and are passed over.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.errors import FieldViolation, InvalidArgument
from common.grpc_errors import truncate
from common.timestamps import TIMESTAMP_RANGE
from common.wire_format import MAX_WALK_DEPTH, length_delimited_fields

MAX_STRUCT_DEPTH = 32
TIMESTAMP_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
DURATION_MAX_SECONDS = 315_576_000_000
NANOS_MAX = 999_999_999
# A key is cut in a field path beyond this many characters (the path is for people; a key
# may be as long as the message).
MAX_KEY_CHARS = 64
# A field path longer than this (UTF-8) is cut, marked by "…".
MAX_PATH_BYTES = 1024


_STRING, _FLOAT, _MESSAGE, _TIMESTAMP, _DURATION, _STRUCT, _VALUE, _LIST, _MAP = range(9)
_WELL_KNOWN = {
    "google.protobuf.Timestamp": _TIMESTAMP,
    "google.protobuf.Duration": _DURATION,
    "google.protobuf.Struct": _STRUCT,
    "google.protobuf.Value": _VALUE,
    "google.protobuf.ListValue": _LIST,
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Violation:
    """The first hygiene violation of a request: its reason, field path and description."""

    reason: str
    description: str
    # Path segments, innermost first (appended while the walk unwinds).
    segments: list[str] = dataclass_field(default_factory=list)

    @property
    def field(self) -> str:
        path = "".join(reversed(self.segments)).removeprefix(".")
        # A status whose details pass the trailer budget loses the violation altogether
        # (common/grpc_errors.py); 32 long non-ASCII keys could get there.
        return truncate(path, MAX_PATH_BYTES)

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            reason=self.reason, violations=[FieldViolation(self.field, self.description)]
        )

    def at(self, segment: str) -> Violation:
        self.segments.append(segment)
        return self


def key_segment(key: object) -> str:
    """A map or Struct key as a field path segment (with its leading ``.``)."""
    if not isinstance(key, str):
        return f".{key}"
    if _IDENTIFIER.fullmatch(key) and len(key) <= MAX_KEY_CHARS:
        return f".{key}"
    shown = key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS] + "…"
    shown = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", shown.replace("`", "``"))
    return f".`{shown}`"


# --- plans: which fields of a message type can hold something to check --------------------

# (field name, kind, repeated, detail): detail is the field's message descriptor for
# _MESSAGE, (key is a string, value kind, value descriptor) for _MAP, else None.
_Entry = tuple[str, int, bool, Any]
# Keyed by message Descriptor (upb's and the pure-Python one are different classes, hence Any).
_PLANS: dict[Any, tuple[_Entry, ...]] = {}
_BUILDING: set[Any] = set()


def _kind(descriptor: Any) -> int | None:
    """What to check in one field (None: nothing)."""
    if descriptor.type == FieldDescriptor.TYPE_STRING:
        return _STRING
    if descriptor.type in _FLOATS:
        return _FLOAT
    if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    message = descriptor.message_type
    well_known = _WELL_KNOWN.get(message.full_name)
    if well_known is not None:
        return well_known
    if message in _BUILDING:  # a recursive type: assume it may hold something
        return _MESSAGE
    return _MESSAGE if _plan(message) else None


def _entry(descriptor: Any) -> _Entry | None:
    repeated = descriptor.is_repeated
    message = descriptor.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_number[1], message.fields_by_number[2]
        value_kind = _kind(value)
        key_is_string = key.type == FieldDescriptor.TYPE_STRING
        if value_kind is None and not key_is_string:
            return None
        return (descriptor.name, _MAP, True, (key_is_string, value_kind, value.message_type))
    kind = _kind(descriptor)
    if kind is None:
        return None
    return (descriptor.name, kind, repeated, message)


def _plan(descriptor: Any) -> tuple[_Entry, ...]:
    """The fields of ``descriptor`` to look at, in field-number order (computed once)."""
    plan = _PLANS.get(descriptor)
    if plan is not None:
        return plan
    _BUILDING.add(descriptor)
    try:
        fields = sorted(descriptor.fields, key=lambda f: f.number)
        plan = tuple(entry for f in fields if (entry := _entry(f)) is not None)
    finally:
        _BUILDING.discard(descriptor)
    _PLANS[descriptor] = plan
    return plan


# --- the walk over a parsed message -------------------------------------------------------


def _nul() -> Violation:
    return Violation("NUL_IN_STRING", "must not contain a NUL character")


def _timestamp(value: Any) -> Violation | None:
    seconds, nanos = value.seconds, value.nanos
    if TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS and 0 <= nanos <= NANOS_MAX:
        return None
    return Violation("TIMESTAMP_OUT_OF_RANGE", f"must be within {TIMESTAMP_RANGE}")


def _duration(value: Any) -> Violation | None:
    seconds, nanos = value.seconds, value.nanos
    if (
        -DURATION_MAX_SECONDS <= seconds <= DURATION_MAX_SECONDS
        and -NANOS_MAX <= nanos <= NANOS_MAX
        and not (seconds > 0 > nanos or seconds < 0 < nanos)
    ):
        return None
    return Violation(
        "DURATION_OUT_OF_RANGE",
        f"must be within +-{DURATION_MAX_SECONDS} seconds, with nanos within "
        f"+-{NANOS_MAX} and of the same sign as seconds",
    )


def _too_deep() -> Violation:
    return Violation("STRUCT_TOO_DEEP", f"must not nest more than {MAX_STRUCT_DEPTH} levels")


def _non_finite() -> Violation:
    return Violation("NON_FINITE_NUMBER", "must be a finite number (not NaN or Infinity)")


def _dynamic(value: Any, depth: int) -> Violation | None:
    """A google.protobuf.Value whose enclosing Struct/ListValue is level ``depth``."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return _nul() if "\x00" in value.string_value else None
    if kind == "number_value":
        return None if math.isfinite(value.number_value) else _non_finite()
    if kind == "struct_value":
        return _struct(value.struct_value, depth + 1)
    if kind == "list_value":
        return _list(value.list_value, depth + 1)
    return None


def _struct(value: Any, depth: int) -> Violation | None:
    if depth > MAX_STRUCT_DEPTH:
        return _too_deep()
    for key, item in value.fields.items():
        if "\x00" in key:
            return Violation("NUL_IN_STRING", "key must not contain a NUL character").at(
                key_segment(key)
            )
        violation = _dynamic(item, depth)
        if violation is not None:
            return violation.at(key_segment(key))
    return None


def _list(value: Any, depth: int) -> Violation | None:
    if depth > MAX_STRUCT_DEPTH:
        return _too_deep()
    for index, item in enumerate(value.values):
        violation = _dynamic(item, depth)
        if violation is not None:
            return violation.at(f"[{index}]")
    return None


def _value(value: Any, kind: int, detail: Any) -> Violation | None:
    """One value of a field (an element, for repeated fields)."""
    if kind == _STRING:
        return _nul() if "\x00" in value else None
    if kind == _FLOAT:
        return None if math.isfinite(value) else _non_finite()
    if kind == _MESSAGE:
        return _message(value, _plan(detail))
    if kind == _TIMESTAMP:
        return _timestamp(value)
    if kind == _DURATION:
        return _duration(value)
    if kind == _STRUCT:
        return _struct(value, 1)
    if kind == _VALUE:
        return _dynamic(value, 0)
    return _list(value, 1)


def _map(container: Any, detail: tuple[bool, int | None, Any]) -> Violation | None:
    key_is_string, value_kind, value_message = detail
    for key, item in container.items():
        if key_is_string and "\x00" in key:
            return Violation("NUL_IN_STRING", "key must not contain a NUL character").at(
                key_segment(key)
            )
        if value_kind is not None:
            violation = _value(item, value_kind, value_message)
            if violation is not None:
                return violation.at(key_segment(key))
    return None


def _message(message: Message, plan: tuple[_Entry, ...]) -> Violation | None:
    for name, kind, repeated, detail in plan:
        violation: Violation | None = None
        if kind == _MAP:
            container = getattr(message, name)
            if container:
                violation = _map(container, detail)
        elif repeated:
            for index, item in enumerate(getattr(message, name)):
                violation = _value(item, kind, detail)
                if violation is not None:
                    violation.at(f"[{index}]")
                    break
        elif kind >= _MESSAGE:
            if message.HasField(name):
                violation = _value(getattr(message, name), kind, detail)
        else:
            violation = _value(getattr(message, name), kind, detail)
        if violation is not None:
            return violation.at(f".{name}")
    return None


def find_violation(message: Message) -> Violation | None:
    """The first hygiene violation of ``message`` (in field-number order), or None."""
    descriptor = message.DESCRIPTOR
    plan = _plan(descriptor)
    if not plan:
        return None
    well_known = _WELL_KNOWN.get(descriptor.full_name)
    if well_known is not None:  # a request that is a Struct, a Timestamp...: the whole is it
        return _value(message, well_known, None)
    return _message(message, plan)


def check_request(message: object) -> None:
    """Raise INVALID_ARGUMENT for the first hygiene violation of a parsed request.

    Anything that is not a protobuf message (raw bytes, the files service's zero-copy data
    chunks) passes unchecked.
    """
    if not isinstance(message, Message):
        return
    violation = find_violation(message)
    if violation is not None:
        raise violation.error()


# --- the same depth rule on bytes that did not parse --------------------------------------


def _wire_dynamic(data: bytes | memoryview, depth: int) -> Violation | None:
    for number, chunk in length_delimited_fields(data):
        if number == 5:  # struct_value
            violation = _wire_struct(chunk, depth + 1)
        elif number == 6:  # list_value
            violation = _wire_list(chunk, depth + 1)
        else:
            continue
        if violation is not None:
            return violation
    return None


def _wire_entry(data: bytes | memoryview) -> tuple[str, bytes | memoryview]:
    """A map entry's key (as text) and value bytes."""
    key: str = ""
    value: bytes | memoryview = b""
    for number, chunk in length_delimited_fields(data):
        if number == 1:
            key = bytes(chunk).decode("utf-8", errors="replace")
        elif number == 2:
            value = chunk
    return key, value


def _wire_struct(data: bytes | memoryview, depth: int) -> Violation | None:
    if depth > MAX_STRUCT_DEPTH:
        return _too_deep()
    for number, chunk in length_delimited_fields(data):
        if number != 1:
            continue
        key, value = _wire_entry(chunk)
        violation = _wire_dynamic(value, depth)
        if violation is not None:
            return violation.at(key_segment(key))
    return None


def _wire_list(data: bytes | memoryview, depth: int) -> Violation | None:
    if depth > MAX_STRUCT_DEPTH:
        return _too_deep()
    index = 0
    for number, chunk in length_delimited_fields(data):
        if number != 1:
            continue
        violation = _wire_dynamic(chunk, depth)
        if violation is not None:
            return violation.at(f"[{index}]")
        index += 1
    return None


def _wire_value(data: bytes | memoryview, message: Any, depth: int) -> Violation | None:
    """The bytes of a field of message type ``message`` (a struct level ``depth`` above)."""
    kind = _WELL_KNOWN.get(message.full_name)
    if kind == _STRUCT:
        return _wire_struct(data, 1)
    if kind == _VALUE:
        return _wire_dynamic(data, 0)
    if kind == _LIST:
        return _wire_list(data, 1)
    if kind is not None:
        return None
    return _wire_message(data, message, depth + 1)


def _wire_message(data: bytes | memoryview, message: Any, depth: int) -> Violation | None:
    if depth > MAX_WALK_DEPTH:
        return None
    seen: dict[int, int] = {}
    for number, chunk in length_delimited_fields(data):
        descriptor = message.fields_by_number.get(number)
        if descriptor is None or descriptor.message_type is None:
            continue
        index = seen.get(number, 0)
        seen[number] = index + 1
        inner = descriptor.message_type
        violation: Violation | None
        if inner.GetOptions().map_entry:
            value_field = inner.fields_by_number[2]
            if value_field.message_type is None:
                continue
            key, value = _wire_entry(chunk)
            violation = _wire_value(value, value_field.message_type, depth)
            if violation is not None:
                violation.at(key_segment(key))
        else:
            violation = _wire_value(chunk, inner, depth)
            if violation is not None and descriptor.is_repeated:
                violation.at(f"[{index}]")
        if violation is not None:
            return violation.at(f".{descriptor.name}")
    return None


def too_deep_in_wire(data: bytes, message: Any) -> Violation | None:
    """The STRUCT_TOO_DEEP violation of serialized bytes that protobuf refused to parse.

    None when no Struct/ListValue in ``data`` is nested deeper than :data:`MAX_STRUCT_DEPTH`
    or the bytes are not a walkable message.
    """
    try:
        return _wire_value(memoryview(data), message, 0)
    except IndexError:
        return None
