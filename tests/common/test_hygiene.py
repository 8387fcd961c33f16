"""Property tests of the input hygiene layer (common/hygiene.py) on the suite's real messages.

Random request messages are built from the descriptors of every RPC of every service; a clean
one passes, and one with a single fault (NUL, bad Timestamp or Duration, NaN/Infinity, a
Struct too deep) injected at a random place is refused with exactly that field's path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.files.v1 import file_service_pb2, video_service_pb2
from mediagrid.jobs.v1 import job_service_pb2, worker_service_pb2
from mediagrid.users.v1 import user_service_pb2

from common import hygiene
from common.errors import InvalidArgument
from common.wire_format import encode_varint
from tests.support.hypo import relaxed

_MODULES = (
    file_service_pb2,
    video_service_pb2,
    job_service_pb2,
    worker_service_pb2,
    user_service_pb2,
)
REQUESTS: list[type[Message]] = sorted(
    {
        getattr(module, method.input_type.name)
        for module in _MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    },
    key=lambda cls: cls.DESCRIPTOR.full_name,
)

TS_MIN, TS_MAX = hygiene.TIMESTAMP_MIN_SECONDS, hygiene.TIMESTAMP_MAX_SECONDS
DUR_MAX, NANOS_MAX = hygiene.DURATION_MAX_SECONDS, hygiene.NANOS_MAX

clean_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _well_known(descriptor: Descriptor | None) -> str | None:
    if descriptor is None:
        return None
    name = descriptor.full_name
    return name.removeprefix("google.protobuf.") if name.startswith("google.protobuf.") else None


# --- clean values -------------------------------------------------------------------------


def _fill_timestamp(data: st.DataObject, message: Any) -> None:
    message.seconds = data.draw(st.sampled_from([TS_MIN, TS_MAX, 0]) | st.integers(TS_MIN, TS_MAX))
    message.nanos = data.draw(st.integers(0, NANOS_MAX))


def _fill_duration(data: st.DataObject, message: Any) -> None:
    seconds = data.draw(st.integers(-DUR_MAX, DUR_MAX))
    nanos = data.draw(st.integers(0, NANOS_MAX))
    message.seconds = seconds
    message.nanos = -nanos if seconds < 0 or (seconds == 0 and data.draw(st.booleans())) else nanos


def _fill_value(data: st.DataObject, value: Any, depth: int) -> None:
    """A clean google.protobuf.Value inside a Struct/ListValue of level ``depth``."""
    choices = ["null", "number", "string", "bool"]
    if depth < 4:
        choices += ["struct", "list"]
    kind = data.draw(st.sampled_from(choices))
    if kind == "null":
        value.null_value = struct_pb2.NULL_VALUE
    elif kind == "number":
        value.number_value = data.draw(finite)
    elif kind == "string":
        value.string_value = data.draw(clean_text)
    elif kind == "bool":
        value.bool_value = data.draw(st.booleans())
    elif kind == "struct":
        _fill_struct(data, value.struct_value, depth + 1)
    else:
        _fill_list(data, value.list_value, depth + 1)


def _fill_struct(data: st.DataObject, struct: Any, depth: int) -> None:
    for key in data.draw(st.lists(keys, max_size=3, unique=True)):
        _fill_value(data, struct.fields[key], depth)


def _fill_list(data: st.DataObject, values: Any, depth: int) -> None:
    for _ in range(data.draw(st.integers(0, 3))):
        _fill_value(data, values.values.add(), depth)


def _fill_message(data: st.DataObject, message: Any, depth: int = 0) -> None:
    """Set a random clean subset of ``message``'s fields."""
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _fill_map(data, getattr(message, field.name), field.message_type, depth)
        elif field.is_repeated:
            for _ in range(data.draw(st.integers(0, 2))):
                _fill_element(data, message, field, depth)
        else:
            _fill_element(data, message, field, depth)


def _scalar(data: st.DataObject, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return data.draw(clean_text)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.binary(max_size=8))  # NUL is fine in bytes
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = data.draw(finite)
        if field.type == FieldDescriptor.TYPE_FLOAT and abs(value) > 3e38:
            return 0.0  # not representable as a 32-bit float
        return value
    if field.type == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return data.draw(st.sampled_from([v.number for v in field.enum_type.values]))
    low, high = _INTS[field.type]
    return data.draw(st.integers(low, high))


def _fill_element(data: st.DataObject, message: Any, field: FieldDescriptor, depth: int) -> None:
    """Set (or append to) ``field`` of ``message`` with one clean value."""
    if field.message_type is None:
        value = _scalar(data, field)
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
        return
    inner = getattr(message, field.name).add() if field.is_repeated else None
    if inner is None:
        inner = getattr(message, field.name)
        inner.SetInParent()
    _fill_inner(data, inner, depth)


def _fill_inner(data: st.DataObject, inner: Any, depth: int) -> None:
    kind = _well_known(inner.DESCRIPTOR)
    if kind == "Timestamp":
        _fill_timestamp(data, inner)
    elif kind == "Duration":
        _fill_duration(data, inner)
    elif kind == "Struct":
        _fill_struct(data, inner, 1)
    elif kind == "Value":
        _fill_value(data, inner, 0)
    elif kind == "ListValue":
        _fill_list(data, inner, 1)
    elif depth < 3:
        _fill_message(data, inner, depth + 1)


def _fill_map(data: st.DataObject, container: Any, entry: Descriptor, depth: int) -> None:
    key_field, value_field = entry.fields_by_number[1], entry.fields_by_number[2]
    for _ in range(data.draw(st.integers(0, 2))):
        key = data.draw(keys) if key_field.type == FieldDescriptor.TYPE_STRING else 1
        if value_field.message_type is None:
            container[key] = _scalar(data, value_field)
        else:
            _fill_inner(data, container[key], depth)


# --- faults -------------------------------------------------------------------------------


@dataclass
class Fault:
    reason: str
    path: str


@functools.cache
def _sites(field: FieldDescriptor, depth: int) -> frozenset[str]:
    """The kinds of fault that can be put somewhere in ``field``."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return frozenset({"string"})
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return frozenset({"float"})
    message = field.message_type
    if message is None:
        return frozenset()
    if message.GetOptions().map_entry:
        return _sites(message.fields_by_number[1], depth) | _sites(
            message.fields_by_number[2], depth
        )
    well_known = {
        "Timestamp": "timestamp",
        "Duration": "duration",
        "Struct": "struct",
        "Value": "struct",
        "ListValue": "struct",
    }.get(_well_known(message) or "")
    if well_known is not None:
        return frozenset({well_known})
    if depth >= 3:
        return frozenset()
    return frozenset().union(*(_sites(f, depth + 1) for f in message.fields))


def _has_fault_site(field: FieldDescriptor, depth: int) -> bool:
    return bool(_sites(field, depth))


def _bad_text(data: st.DataObject) -> str:
    return data.draw(clean_text) + "\x00" + data.draw(clean_text)


def _inject_dynamic(data: st.DataObject, value: Any, depth: int) -> tuple[str, str]:
    """Put one fault into a Value inside a Struct/ListValue of level ``depth``: (reason, path
    below the value)."""
    fault = data.draw(st.sampled_from(["string", "number", "deeper", "too_deep"]))
    if fault == "string":
        value.string_value = _bad_text(data)
        return "NUL_IN_STRING", ""
    if fault == "number":
        value.number_value = data.draw(non_finite)
        return "NON_FINITE_NUMBER", ""
    if fault == "too_deep":
        # Nest Structs until one is the first past the limit; name that one.
        path, struct = "", None
        level = depth
        target = value
        while level < hygiene.MAX_STRUCT_DEPTH + 1:
            struct = target.struct_value
            level += 1
            if level == hygiene.MAX_STRUCT_DEPTH + 1:
                break
            path += ".k"
            target = struct.fields["k"]
        assert struct is not None
        struct.SetInParent()
        return "STRUCT_TOO_DEEP", path
    if data.draw(st.booleans()):
        struct = value.struct_value
        _fill_struct(data, struct, depth + 1)
        if data.draw(st.booleans()):
            key = data.draw(keys)
            struct.fields[f"{key}\x00"].null_value = struct_pb2.NULL_VALUE
            return "NUL_IN_STRING", f".`{key}\\u0000`"
        key = data.draw(keys)
        reason, below = _inject_dynamic(data, struct.fields[key], depth + 1)
        return reason, f".{key}{below}"
    values = value.list_value
    _fill_list(data, values, depth + 1)
    index = len(values.values)
    reason, below = _inject_dynamic(data, values.values.add(), depth + 1)
    return reason, f"[{index}]{below}"


def _inject_message(data: st.DataObject, inner: Any, depth: int, kind: str) -> tuple[str, str]:
    """One fault in a message-typed value: (reason, path below it)."""
    well_known = _well_known(inner.DESCRIPTOR)
    if well_known == "Timestamp":
        inner.seconds, inner.nanos = data.draw(
            st.sampled_from([(TS_MAX + 1, 0), (TS_MIN - 1, 0), (0, -1), (0, NANOS_MAX + 1)])
            | st.tuples(st.integers(TS_MAX + 1, 2**63 - 1), st.integers(0, NANOS_MAX))
        )
        return "TIMESTAMP_OUT_OF_RANGE", ""
    if well_known == "Duration":
        inner.seconds, inner.nanos = data.draw(
            st.sampled_from([(DUR_MAX + 1, 0), (-DUR_MAX - 1, 0), (0, 2 * 10**9), (1, -1), (-1, 1)])
            | st.tuples(st.integers(DUR_MAX + 1, 2**63 - 1), st.integers(0, NANOS_MAX))
        )
        return "DURATION_OUT_OF_RANGE", ""
    if well_known == "Struct":
        key = data.draw(keys)
        reason, below = _inject_dynamic(data, inner.fields[key], 1)
        return reason, f".{key}{below}"
    if well_known == "Value":
        return _inject_dynamic(data, inner, 0)
    if well_known == "ListValue":
        index = len(inner.values)
        reason, below = _inject_dynamic(data, inner.values.add(), 1)
        return reason, f"[{index}]{below}"
    return _inject(data, inner, depth + 1, kind)


def _inject(
    data: st.DataObject, message: Any, depth: int = 0, kind: str | None = None
) -> tuple[str, str]:
    """One fault of ``kind`` (drawn when None) somewhere in ``message`` (already clean):
    (reason, its field path)."""
    fields = message.DESCRIPTOR.fields
    if kind is None:
        kind = data.draw(
            st.sampled_from(sorted(frozenset().union(*(_sites(f, depth) for f in fields))))
        )
    field = data.draw(st.sampled_from([f for f in fields if kind in _sites(f, depth)]))
    name = f".{field.name}"
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        container = getattr(message, field.name)
        value_field = message_type.fields_by_number[2]
        key_is_string = message_type.fields_by_number[1].type == FieldDescriptor.TYPE_STRING
        if (
            kind == "string"
            and key_is_string
            and ("string" not in _sites(value_field, depth) or data.draw(st.booleans()))
        ):
            bad_key = data.draw(keys)
            if value_field.message_type is None:
                container[f"{bad_key}\x00"] = _scalar_or_default(value_field)
            else:
                container[f"{bad_key}\x00"].SetInParent()
            return "NUL_IN_STRING", f"{name}.`{bad_key}\\u0000`"
        key: Any = data.draw(keys) if key_is_string else 7
        while key in container:
            key = key + "x" if key_is_string else key + 1
        if value_field.message_type is None:
            reason = _scalar_fault(data, value_field, container, key)
            return reason, f"{name}.{key}"
        reason, below = _inject_message(data, container[key], depth, kind)
        return reason, f"{name}.{key}{below}"
    if field.is_repeated:
        values = getattr(message, field.name)
        index = len(values)
        if message_type is None:
            values.append(_scalar(data, field))
            reason = _scalar_fault(data, field, values, index)
            return reason, f"{name}[{index}]"
        reason, below = _inject_message(data, values.add(), depth, kind)
        return reason, f"{name}[{index}]{below}"
    if message_type is None:
        reason = _scalar_fault(data, field, message, field.name)
        return reason, name
    inner = getattr(message, field.name)
    inner.SetInParent()
    reason, below = _inject_message(data, inner, depth, kind)
    return reason, f"{name}{below}"


def _scalar_or_default(field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        raise AssertionError("map values of message type are set through the container")
    return "" if field.type == FieldDescriptor.TYPE_STRING else 0


def _scalar_fault(data: st.DataObject, field: FieldDescriptor, target: Any, where: Any) -> str:
    """Overwrite one string/float slot (attribute name, list index or map key) with a fault."""
    if field.type == FieldDescriptor.TYPE_STRING:
        value: Any = _bad_text(data)
        reason = "NUL_IN_STRING"
    else:
        value = data.draw(non_finite)
        reason = "NON_FINITE_NUMBER"
    if isinstance(where, str) and not isinstance(target, Message):
        target[where] = value
    elif isinstance(where, str):
        setattr(target, where, value)
    else:
        target[where] = value
    return reason


# --- properties ---------------------------------------------------------------------------


@relaxed(max_examples=300)
@given(data=st.data(), cls=st.sampled_from(REQUESTS))
def test_clean_requests_pass(data: st.DataObject, cls: type[Message]) -> None:
    message = cls()
    _fill_message(data, message)
    assert hygiene.find_violation(message) is None
    hygiene.check_request(message)  # does not raise
    parsed = cls.FromString(message.SerializeToString())
    assert hygiene.find_violation(parsed) is None


def _message_sites(cls: type[Message]) -> frozenset[str]:
    return frozenset().union(*(_sites(f, 0) for f in cls.DESCRIPTOR.fields))


FAULTABLE = [cls for cls in REQUESTS if _message_sites(cls)]
KINDS = sorted(frozenset().union(*(_message_sites(cls) for cls in FAULTABLE)))


@relaxed(max_examples=500)
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_one_fault_is_named_by_its_field_path(data: st.DataObject, kind: str) -> None:
    cls = data.draw(st.sampled_from([c for c in FAULTABLE if kind in _message_sites(c)]))
    message = cls()
    _fill_message(data, message)
    reason, path = _inject(data, message, kind=kind)
    path = path.removeprefix(".")
    violation = hygiene.find_violation(message)
    assert violation is not None
    assert (violation.reason, violation.field) == (reason, path)
    with pytest.raises(InvalidArgument) as raised:
        hygiene.check_request(message)
    assert raised.value.reason == reason
    assert [v.field for v in raised.value.violations] == [path]
    # The same after a trip over the wire (what the interceptor checks).
    raw = message.SerializeToString()
    try:
        parsed = cls.FromString(raw)
    except DecodeError:  # nested past protobuf's own limit: the wire walk names it
        again = hygiene.too_deep_in_wire(raw, cls.DESCRIPTOR)
    else:
        again = hygiene.find_violation(parsed)
    assert again is not None and (again.reason, again.field) == (reason, path)


def test_every_kind_of_fault_has_sites_in_the_suite() -> None:
    assert KINDS == ["duration", "float", "string", "struct", "timestamp"]


def test_every_service_has_request_messages_with_fault_sites() -> None:
    services = {cls.DESCRIPTOR.file.package for cls in FAULTABLE}
    assert services == {"mediagrid.files.v1", "mediagrid.jobs.v1", "mediagrid.users.v1"}


# --- Struct depth, also in bytes protobuf cannot parse -------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def nested_struct_bytes(levels: int, key: bytes = b"a") -> bytes:
    """A Struct ``{key: {key: ... {}}}`` of ``levels`` Structs, serialized by hand (protobuf
    cannot build or parse the deep ones)."""
    struct = b""
    for _ in range(levels - 1):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, key) + _field(2, value))  # Struct.fields entry
    return struct


def create_job_bytes(levels: int, key: bytes = b"a") -> bytes:
    spec = _field(1, b"noop") + _field(2, nested_struct_bytes(levels, key))
    return _field(1, spec)


@given(levels=st.integers(1, hygiene.MAX_STRUCT_DEPTH), key=keys)
def test_structs_up_to_the_limit_pass(levels: int, key: str) -> None:
    raw = create_job_bytes(levels, key.encode())
    message = job_service_pb2.CreateJobRequest.FromString(raw)
    assert hygiene.find_violation(message) is None
    assert hygiene.too_deep_in_wire(raw, job_service_pb2.CreateJobRequest.DESCRIPTOR) is None


@relaxed(max_examples=50)
@given(levels=st.integers(hygiene.MAX_STRUCT_DEPTH + 1, 3000), key=keys)
def test_a_struct_past_the_limit_is_named_parsed_or_not(levels: int, key: str) -> None:
    raw = create_job_bytes(levels, key.encode())
    expected = "job.payload" + f".{key}" * hygiene.MAX_STRUCT_DEPTH
    violation = hygiene.too_deep_in_wire(raw, job_service_pb2.CreateJobRequest.DESCRIPTOR)
    assert violation is not None
    assert (violation.reason, violation.field) == ("STRUCT_TOO_DEEP", expected)
    try:
        message = job_service_pb2.CreateJobRequest.FromString(raw)
    except DecodeError:  # protobuf refuses about 33 levels and more
        return
    parsed = hygiene.find_violation(message)
    assert parsed is not None and (parsed.reason, parsed.field) == ("STRUCT_TOO_DEEP", expected)


def test_protobuf_refuses_deep_structs_so_the_wire_walk_must_name_them() -> None:
    # Why too_deep_in_wire exists: the parser gives up on nesting, not on our limit.
    with pytest.raises(DecodeError, match=r"MaxDepth"):
        job_service_pb2.CreateJobRequest.FromString(create_job_bytes(200))
    deep = create_job_bytes(10_000)
    violation = hygiene.too_deep_in_wire(deep, job_service_pb2.CreateJobRequest.DESCRIPTOR)
    assert violation is not None and violation.reason == "STRUCT_TOO_DEEP"


def test_deep_lists_count_too() -> None:
    message = job_service_pb2.CreateJobRequest()
    values = message.job.payload.fields["l"].list_value  # level 2
    for _ in range(hygiene.MAX_STRUCT_DEPTH - 2):
        values = values.values.add().list_value
    values.SetInParent()  # level 32: allowed
    assert hygiene.find_violation(message) is None
    values.values.add().list_value.SetInParent()  # level 33
    violation = hygiene.find_violation(message)
    assert violation is not None and violation.reason == "STRUCT_TOO_DEEP"
    assert violation.field == "job.payload.l" + "[0]" * (hygiene.MAX_STRUCT_DEPTH - 1)


# --- edges and path spelling --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [
        (TS_MIN, 0, True),
        (TS_MAX, NANOS_MAX, True),
        (TS_MIN - 1, NANOS_MAX, False),
        (TS_MAX + 1, 0, False),
        (0, -1, False),
        (0, NANOS_MAX + 1, False),
    ],
)
def test_timestamp_edges(seconds: int, nanos: int, ok: bool) -> None:
    message = job_service_pb2.PurgeJobsRequest()
    message.finish_time_before.seconds, message.finish_time_before.nanos = seconds, nanos
    assert (hygiene.find_violation(message) is None) is ok


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [
        (DUR_MAX, NANOS_MAX, True),
        (-DUR_MAX, -NANOS_MAX, True),
        (0, -5, True),
        (0, 5, True),
        (DUR_MAX + 1, 0, False),
        (-DUR_MAX - 1, 0, False),
        (0, 2 * 10**9, False),
        (1, -1, False),
        (-1, 1, False),
    ],
)
def test_duration_edges(seconds: int, nanos: int, ok: bool) -> None:
    message = file_service_pb2.CreateDownloadUrlRequest(name="files/x")
    message.ttl.seconds, message.ttl.nanos = seconds, nanos
    assert (hygiene.find_violation(message) is None) is ok


@pytest.mark.parametrize(
    ("key", "segment"),
    [
        ("plain_key1", ".plain_key1"),
        ("a b", ".`a b`"),
        ("a.b", ".`a.b`"),
        ("tick`", ".`tick```"),
        ("nul\x00", ".`nul\\u0000`"),
        ("1st", ".`1st`"),
        ("x" * 100, ".`" + "x" * hygiene.MAX_KEY_CHARS + "…`"),
    ],
)
def test_key_segments(key: str, segment: str) -> None:
    assert hygiene.key_segment(key) == segment


def test_bytes_fields_and_non_messages_pass() -> None:
    assert hygiene.find_violation(file_service_pb2.UploadRequest(data=b"\x00" * 10)) is None
    hygiene.check_request(memoryview(b"\x00\x00"))  # the zero-copy upload chunk
    hygiene.check_request(b"\x00")


def test_messages_without_checked_fields_have_empty_plans() -> None:
    assert hygiene._plan(user_service_pb2.LogoutRequest.DESCRIPTOR) == ()
    assert hygiene._plan(wrappers_pb2.Int64Value.DESCRIPTOR) == ()
    assert hygiene._plan(job_service_pb2.GetJobRequest.DESCRIPTOR) != ()  # name: a string


def _activity(**metadata: str) -> Message:
    return user_service_pb2.RecordActivityRequest(action="a", resource="r", metadata=metadata)


def _payload(value: Any) -> Message:
    message = job_service_pb2.CreateJobRequest()
    message.job.type = "noop"
    message.job.payload.update(value)
    return message


@pytest.mark.parametrize(
    ("message", "reason", "path"),
    [
        (user_service_pb2.LoginRequest(email="a\x00@b.c"), "NUL_IN_STRING", "email"),
        (_activity(**{"k\x00": "v"}), "NUL_IN_STRING", "metadata.`k\\u0000`"),
        (_activity(k="v\x00"), "NUL_IN_STRING", "metadata.k"),
        (
            file_service_pb2.UpdateFileRequest(update_mask={"paths": ["labels", "x\x00"]}),
            "NUL_IN_STRING",
            "update_mask.paths[1]",
        ),
        (_payload({"a": {"b\x00": 1}}), "NUL_IN_STRING", "job.payload.a.`b\\u0000`"),
        (_payload({"a": [1, "x\x00"]}), "NUL_IN_STRING", "job.payload.a[1]"),
        (_payload({"a": [1, {"n": math.nan}]}), "NON_FINITE_NUMBER", "job.payload.a[1].n"),
        (_payload({"i": -math.inf}), "NON_FINITE_NUMBER", "job.payload.i"),
        (
            video_service_pb2.RegenerateThumbnailsRequest(times_seconds=[1.0, math.inf]),
            "NON_FINITE_NUMBER",
            "times_seconds[1]",
        ),
        (
            worker_service_pb2.ReportProgressRequest(percent=math.nan),
            "NON_FINITE_NUMBER",
            "percent",
        ),
    ],
)
def test_examples(message: Message, reason: str, path: str) -> None:
    violation = hygiene.find_violation(message)
    assert violation is not None and (violation.reason, violation.field) == (reason, path)


def test_a_path_of_long_unicode_keys_is_cut_to_fit_the_status() -> None:
    from common.grpc_errors import MAX_DETAILS_BYTES

    key = "é" * 100
    message = job_service_pb2.CreateJobRequest()
    struct = message.job.payload
    for _ in range(hygiene.MAX_STRUCT_DEPTH):
        struct = struct.fields[key].struct_value
    struct.SetInParent()  # level 33
    violation = hygiene.find_violation(message)
    assert violation is not None and violation.reason == "STRUCT_TOO_DEEP"
    assert violation.field.startswith("job.payload.`éé") and violation.field.endswith("…")
    assert len(violation.field.encode()) <= hygiene.MAX_PATH_BYTES < MAX_DETAILS_BYTES
