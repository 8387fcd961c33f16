"""Hypothesis strategies built from protobuf descriptors: hostile requests for any RPC.

``requests(descriptor, names)`` draws a ``WireRequest``: a message of that type whose every
field may be set to an extreme or malformed value, serialized to the bytes a client sends.
What Python's protobuf runtime refuses to hold is written on the wire by hand:

- scalars at and past their limits (int32/int64/uint64 extremes, negative sizes, NaN, ±Inf,
  -0.0, float32 overflow), enums with numbers the schema does not know;
- strings with NUL, control characters, bidi overrides, very long ones, and INVALID UTF-8
  (appended as raw bytes after the serialized message: the last value of a field wins and
  nested messages merge, so the bytes land in the field the path names);
- oneofs (one member or none), repeated and map fields, nested messages to a bounded depth;
- well-known types: Timestamp and Duration at and past their valid ranges, Struct/Value/
  ListValue with NaN/Inf and nested up to a few hundred levels, FieldMask with odd paths;
- plausible resource names (``files/…``, ``users/me``, names that exist on the server when
  the caller passes them in ``Names``) mixed with garbage, so a share of the requests gets
  past the cheap checks and into the handlers.

Half of the requests are wild (any field hostile), half valid-looking with exactly one hostile
part, which gets past the checks of the other fields into the handler and the database.
Everything is drawn from the descriptor, so a new field or RPC is fuzzed without a change here.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from common.wire_format import encode_varint

# The runtime's descriptors (upb) and the pure-Python ones the stubs describe are both in use;
# their types do not line up, so the descriptors are typed loosely here.
Field = Any
MessageType = Any

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# google.protobuf.Timestamp is valid from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
# google.protobuf.Duration is valid within ±10,000 years.
DURATION_MAX_SECONDS = 315_576_000_000
NANOS_MAX = 999_999_999

# Byte sequences no UTF-8 decoder accepts (lone continuation, overlong, surrogate, > U+10FFFF).
INVALID_UTF8 = (
    b"\xff",
    b"\x80",
    b"abc\xc3",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"files/\xfe\xfe",
    b"users/\xe2\x82",
)

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 8,
    "\t\n\r\x0b\x0c",
    "\x1b[31mred\x1b[0m",
    "\x7f\x85\u2028\u2029",
    "\u202eevil\u202c",
    "\ufeffbom",
    "\uffff\ufffe",
    "\U0010ffff",
    "😀" * 5,
    "e\u0301" * 4,
    "../../../etc/passwd",
    "..",
    "/",
    "%00%2e%2e%2f",
    "' OR '1'='1' --",
    "x'); DROP TABLE users.users; --",
    "$1",
    "\\",
    "*",
    "null",
    "NaN",
    "-1",
    "9" * 40,
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${jndi:ldap://x}",
)

RESOURCE_PREFIXES = ("files", "jobs", "users", "batches", "videos", "uploads")
JOB_TYPES = (
    "noop",
    "sleep",
    "fail",
    "stamp",
    "users.purge",
    "video.probe",
    "video.thumbnail",
    "no.such.type",
    "NOOP",
    "noop\x00",
)
PERMISSIONS = (
    "files.read",
    "files.write",
    "files.delete",
    "jobs.create",
    "jobs.read",
    "jobs.cancel",
    "users.create",
    "users.list",
    "users.delete",
    "users.read",
    "sessions.read",
    "activity.read",
    "*",
    "files.*",
)
CONTENT_TYPES = (
    "video/mp4",
    "text/plain",
    "application/octet-stream",
    "image/jpeg",
    "video/",
    "text/plain; charset=utf-8",
    "not a type",
    "*/*",
)


@dataclass(frozen=True)
class Names:
    """Resource names that exist on the server under test, by kind (``files``, ``jobs`` …).

    Kinds: users, files, jobs, batches, videos, uploads, sessions, grants, apiKeys, leases (the lease
    ids of claimed jobs), versions (object version ids), emails.
    """

    by_kind: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def of(self, kind: str) -> Sequence[str]:
        return self.by_kind.get(kind, ())


@dataclass(frozen=True)
class WireRequest:
    """A request as sent: the message, plus raw bytes appended where protobuf cannot go."""

    message: Message
    injected: tuple[str, bytes] | None = None  # (field path, raw field bytes) appended
    trailing: bytes = b""  # arbitrary bytes after everything (unknown or malformed fields)

    def raw(self) -> bytes:
        tail = self.injected[1] if self.injected else b""
        return self.message.SerializeToString() + tail + self.trailing

    def __repr__(self) -> str:
        try:
            text = text_format.MessageToString(self.message, as_one_line=True, as_utf8=True)
        except Exception:  # text_format cannot print Values nested past the parser's depth
            raw = self.message.SerializeToString()
            text = f"<too deep to print; {len(raw)} bytes: {raw[:600].hex()}>"
        if len(text) > 2000:
            text = f"{text[:2000]}… ({len(text)} chars)"
        parts = [f"{self.message.DESCRIPTOR.full_name}({text})"]
        if self.injected:
            parts.append(f"+ raw {self.injected[0]}={self.injected[1].hex()}")
        if self.trailing:
            parts.append(f"+ trailing {self.trailing.hex()}")
        return " ".join(parts)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this (not the dataclass fields)."""
        printer.text(repr(self))


# --- scalars ----------------------------------------------------------------------------------


def integers(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = sorted(
        {
            v
            for v in (
                0,
                1,
                -1,
                2,
                10,
                100,
                1000,
                10**6,
                2**31 - 1,
                -(2**31),
                2**32 - 1,
                2**53 + 1,
                2**62,
                2**63 - 1,
                -(2**63),
                2**64 - 1,
                low,
                high,
                low + 1,
                high - 1,
            )
            if low <= v <= high
        }
    )
    return st.one_of(
        st.sampled_from(edges),
        st.integers(low, high),
        st.integers(-5, 5).filter(lambda v: low <= v <= high),
    )


def doubles(width: Literal[32, 64] = 64) -> st.SearchStrategy[float]:
    big = 3.4028234663852886e38 if width == 32 else 1.7976931348623157e308
    tiny = 1.401298464324817e-45 if width == 32 else 5e-324
    special = [
        math.nan,
        math.inf,
        -math.inf,
        -0.0,
        0.0,
        1.0,
        -1.0,
        big,
        -big,
        tiny,
        2.0**53 + 1,
        1e-7,
        360.0,
        45.5,
        1e15,
    ]
    return st.one_of(st.sampled_from(special), st.floats(width=width))


def plain_text(max_size: int = 24) -> st.SearchStrategy[str]:
    """Any Unicode text protobuf can encode (no lone surrogates)."""
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)


def long_text() -> st.SearchStrategy[str]:
    return st.builds(
        lambda unit, n: (unit * n)[:n],
        st.sampled_from(["a", "é", "😀", "a/", "\x00", "files/"]),
        st.sampled_from([256, 257, 1024, 4097, 65_536, 200_000]),
    )


def hostile_text() -> st.SearchStrategy[str]:
    """Text a server must survive: NUL, control characters, odd Unicode, very long."""
    controls = st.text(st.characters(categories=["Cc"]), min_size=1, max_size=8)
    with_nul = st.builds(lambda a, b: f"{a}\x00{b}", plain_text(8), plain_text(8))
    return st.one_of(
        plain_text(),
        st.sampled_from(ODD_STRINGS),
        controls,
        with_nul,
        long_text(),
    )


def _uuidish() -> st.SearchStrategy[str]:
    return st.one_of(
        st.uuids().map(str),
        st.just("00000000-0000-0000-0000-000000000000"),
        st.uuids().map(lambda u: u.hex),
        st.integers(0, 10**12).map(str),
    )


def resource_names(kinds: Sequence[str], names: Names) -> st.SearchStrategy[str]:
    """Names of the given kinds: existing ones, well-formed unknown ones, and mangled ones."""
    existing = [n for kind in kinds for n in names.of(kind)]
    prefixes = [k for k in kinds if k in RESOURCE_PREFIXES] or list(RESOURCE_PREFIXES)
    well_formed = st.builds(lambda p, i: f"{p}/{i}", st.sampled_from(prefixes), _uuidish())
    mangled = st.builds(
        lambda p, s: f"{p}/{s}", st.sampled_from(list(RESOURCE_PREFIXES)), hostile_text()
    )
    options: list[st.SearchStrategy[str]] = [well_formed, mangled, hostile_text()]
    if "users" in kinds:
        options.append(st.sampled_from(["users/me", "users/-", "users/", "users/me/x"]))
    if existing:
        exact = st.sampled_from(existing)
        options.append(exact)
        options.append(exact)  # twice: a real name is worth more than another random one
        options.append(
            st.builds(
                lambda n, t: f"{n}{t}", exact, st.sampled_from(["/", "x", "\x00", "/..", " "])
            )
        )
        options.append(exact.map(lambda n: n.upper()))
    return st.one_of(*options)


# Which kinds of name a string field holds, by field name (the same across the suite's protos).
_FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "owner": ("users",),
    "parent": ("users",),
    "user": ("users",),
    "principal": ("users",),
    "actor": ("users",),
    "job": ("jobs",),
    "jobs": ("jobs",),
    "batch": ("batches",),
    "file": ("files",),
    "files": ("files",),
    "upload": ("uploads",),
    "video": ("videos",),
}

# The kinds a ``name``/``parent``/``resource`` field of a request names, by words in its type.
_MESSAGE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Session", ("sessions", "users")),
    ("Permission", ("grants", "users")),
    ("ApiKey", ("apiKeys", "users")),
    ("Activity", ("users",)),
    ("Password", ("users",)),
    ("UploadStatus", ("uploads",)),
    ("CancelUpload", ("uploads",)),
    ("UrlUpload", ("uploads",)),
    ("Video", ("videos", "files")),
    ("Thumbnail", ("videos", "files")),
    ("StreamUrl", ("videos", "files")),
    ("Batch", ("batches",)),
    ("Job", ("jobs",)),
    ("User", ("users",)),
    ("File", ("files",)),
    ("Download", ("files",)),
)


def _kinds_for(message: MessageType, name: str) -> tuple[str, ...] | None:
    if name in _FIELD_KINDS:
        return _FIELD_KINDS[name]
    if name in ("name", "resource"):
        for word, kinds in _MESSAGE_KINDS:
            if word in message.name:
                return kinds
        return tuple(RESOURCE_PREFIXES)
    return None


def strings_for(message: MessageType, name: str, names: Names) -> st.SearchStrategy[str]:
    """Plausible values for a string field (by its name), mixed with hostile text."""
    kinds = _kinds_for(message, name)
    if kinds is not None:
        return resource_names(kinds, names)
    specific: list[st.SearchStrategy[str]] = []
    if name == "email":
        specific += [
            st.sampled_from(
                [*names.of("emails"), "a@example.com", "ADMIN@EXAMPLE.COM", "@", "a@b"]
            ),
            st.builds(lambda s: f"{s}@example.com", hostile_text()),
        ]
    elif name == "type" or name == "types":
        specific.append(st.sampled_from(JOB_TYPES))
    elif name == "permission":
        specific.append(st.sampled_from(PERMISSIONS))
    elif name == "action":
        specific.append(st.sampled_from([*PERMISSIONS, "files.upload", "users.login"]))
    elif name in ("content_type", "content_type_prefix"):
        specific.append(st.sampled_from(CONTENT_TYPES))
    elif name == "sha256":
        specific.append(
            st.one_of(
                st.binary(min_size=32, max_size=32).map(bytes.hex),
                st.just("0" * 64),
                st.just("Z" * 64),
            )
        )
    elif name == "version_id":
        specific.append(st.sampled_from([*names.of("versions"), "null", "v1"]))
    elif name == "lease_id":
        specific.append(st.sampled_from([*names.of("leases"), str(uuid.UUID(int=0))]))
    elif name == "page_token":
        specific.append(st.sampled_from(["!!!", "eyJ9", "eyJxIjoiMCJ9", "AAAA", "=" * 8]))
    elif name in ("password", "current_password", "new_password"):
        specific.append(st.sampled_from(["a perfectly fine passphrase", "x", "pw" * 600]))
    elif name == "key":
        specific.append(st.sampled_from(["users/x/files/y", "../../other", "a" * 1100]))
    elif name == "url":
        specific.append(st.sampled_from(["http://127.0.0.1/", "file:///etc/passwd", "s3://b/k"]))
    if not specific:
        return hostile_text()
    return st.one_of(*specific, *specific, hostile_text())


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"\x00" * 16, b"\x00\x00\x00\x18ftypmp42"]),
        st.sampled_from([70_000, 262_144]).map(lambda n: b"\xab" * n),
    )


# --- well-known types -----------------------------------------------------------------------


def timestamps() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a Timestamp: valid, at the limits, and past them."""
    seconds = st.one_of(
        st.sampled_from(
            [
                0,
                -1,
                1,
                TIMESTAMP_MIN_SECONDS,
                TIMESTAMP_MIN_SECONDS - 1,
                TIMESTAMP_MAX_SECONDS,
                TIMESTAMP_MAX_SECONDS + 1,
                INT64[0],
                INT64[1],
                1_800_000_000,
                2**31,
                -(2**31),
            ]
        ),
        st.integers(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS),
        st.integers(*INT64),
    )
    nanos = st.one_of(
        st.sampled_from([0, NANOS_MAX, NANOS_MAX + 1, -1, INT32[0], INT32[1]]),
        st.integers(0, NANOS_MAX),
    )
    return st.tuples(seconds, nanos)


def durations() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a Duration: valid, at ±10,000 years, past it, mixed signs."""
    seconds = st.one_of(
        st.sampled_from(
            [
                0,
                1,
                -1,
                60,
                3600,
                86_400 * 365,
                DURATION_MAX_SECONDS,
                -DURATION_MAX_SECONDS,
                DURATION_MAX_SECONDS + 1,
                -DURATION_MAX_SECONDS - 1,
                INT64[0],
                INT64[1],
                2**62,
            ]
        ),
        st.integers(-DURATION_MAX_SECONDS, DURATION_MAX_SECONDS),
        st.integers(*INT64),
    )
    nanos = st.one_of(
        st.sampled_from(
            [
                0,
                NANOS_MAX,
                -NANOS_MAX,
                NANOS_MAX + 1,
                -(NANOS_MAX + 1),
                2_000_000_000,
                INT32[0],
                INT32[1],
                500_000_000,
                -500_000_000,
            ]
        ),
        st.integers(-NANOS_MAX, NANOS_MAX),
    )
    return st.tuples(seconds, nanos)


def json_numbers() -> st.SearchStrategy[float]:
    return st.one_of(doubles(), st.integers(-(2**53), 2**53).map(float))


def json_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), json_numbers(), hostile_text())


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Struct-shaped Python values (dict/list/str/float/bool/None), NaN and ±Inf included."""
    keys = st.one_of(plain_text(8), st.sampled_from(["", "\x00", "a.b", "$ref", "user", "bucket"]))
    return st.recursive(
        json_leaves(),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=max_leaves,
    )


@dataclass(frozen=True)
class Deep:
    """A chain of ``depth`` nested lists/structs (alternating by ``pattern``) around ``leaf``."""

    depth: int
    pattern: str  # "struct", "list" or "mixed"
    leaf: Any


def deep_values() -> st.SearchStrategy[Deep]:
    return st.builds(
        Deep,
        st.one_of(st.integers(1, 40), st.sampled_from([31, 32, 33, 34, 64, 100, 200, 300])),
        st.sampled_from(["struct", "list", "mixed"]),
        json_leaves(),
    )


def set_value(target: Any, value: Any) -> None:
    """Fill a google.protobuf.Value from a Python value (NaN/Inf kept, unlike Struct.update)."""
    if isinstance(value, Deep):
        for level in range(value.depth):
            as_struct = value.pattern == "struct" or (value.pattern == "mixed" and level % 2 == 0)
            target = (
                target.struct_value.fields["k"] if as_struct else target.list_value.values.add()
            )
        set_value(target, value.leaf)
    elif value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, float | int):
        target.number_value = float(value)
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, list):
        target.list_value.SetInParent()
        for item in value:
            set_value(target.list_value.values.add(), item)
    else:
        target.struct_value.SetInParent()
        for key, item in value.items():
            set_value(target.struct_value.fields[key], item)


def struct_contents() -> st.SearchStrategy[dict[str, Any]]:
    """Contents of a Struct: shallow ones with odd values, and deep ones."""
    keys = st.one_of(
        st.sampled_from(["user", "file", "bucket", "key", "seconds", "message", "name"]),
        plain_text(8),
    )
    return st.dictionaries(keys, st.one_of(json_values(), deep_values()), max_size=4)


def field_mask_paths(message: MessageType) -> st.SearchStrategy[list[str]]:
    """Paths naming fields of the request's messages, wildcards, nesting and garbage."""
    known = sorted(
        {f"{f.name}" for m in message.fields if m.message_type for f in m.message_type.fields}
        | {m.name for m in message.fields}
    )
    odd = ["*", "", ".", "a.b.c", "labels.x", "name", "DISPLAY_NAME", "display_name ", "\x00"]
    path = st.one_of(st.sampled_from(known or odd), st.sampled_from(odd), hostile_text())
    return st.lists(path, max_size=4)


# --- messages ------------------------------------------------------------------------------

_WKT = "google.protobuf."
WELL_KNOWN = frozenset(
    f"{_WKT}{name}"
    for name in ("Timestamp", "Duration", "Struct", "Value", "ListValue", "FieldMask")
)


def _fill_wkt(draw: Callable[..., Any], msg: Message, parent: MessageType, hostile: bool) -> bool:
    """Fill a well-known type specially; False when ``msg`` is an ordinary message."""
    full = msg.DESCRIPTOR.full_name
    if full not in WELL_KNOWN:
        return False
    if not hostile:
        _fill_benign_wkt(draw, msg, parent)
    elif full in (f"{_WKT}Timestamp", f"{_WKT}Duration"):
        seconds, nanos = draw(timestamps() if full.endswith("Timestamp") else durations())
        msg.seconds, msg.nanos = seconds, nanos  # type: ignore[attr-defined]
    elif full == f"{_WKT}Struct":
        for key, value in draw(struct_contents()).items():
            set_value(msg.fields[key], value)  # type: ignore[attr-defined]
    elif full == f"{_WKT}Value":
        set_value(msg, draw(st.one_of(json_values(), deep_values())))
    elif full == f"{_WKT}ListValue":
        for value in draw(st.lists(st.one_of(json_values(), deep_values()), max_size=3)):
            set_value(msg.values.add(), value)  # type: ignore[attr-defined]
    else:
        msg.paths.extend(draw(field_mask_paths(parent)))  # type: ignore[attr-defined]
    return True


NOW = int(time.time())
SIMPLE_TEXT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


def _fill_benign_wkt(draw: Callable[..., Any], msg: Message, parent: MessageType) -> None:
    """Valid, ordinary values, so that the one hostile field of a request is what is tested."""
    full = msg.DESCRIPTOR.full_name
    if full == f"{_WKT}Timestamp":
        # Near the present: schedule times and filters are checked against the clock.
        msg.seconds = NOW + draw(st.integers(-600, 3600))  # type: ignore[attr-defined]
    elif full == f"{_WKT}Duration":
        msg.seconds = draw(st.integers(1, 600))  # type: ignore[attr-defined]
    elif full in (f"{_WKT}Struct", f"{_WKT}Value", f"{_WKT}ListValue"):
        plain = st.dictionaries(
            SIMPLE_TEXT, st.one_of(SIMPLE_TEXT, st.integers(0, 1000).map(float)), max_size=3
        )
        if full == f"{_WKT}Struct":
            for key, value in draw(plain).items():
                set_value(msg.fields[key], value)  # type: ignore[attr-defined]
        elif full == f"{_WKT}Value":
            set_value(msg, draw(plain))
        else:
            set_value(msg.values.add(), draw(plain))  # type: ignore[attr-defined]
    else:
        known = [f.name for m in parent.fields if m.message_type for f in m.message_type.fields]
        if known:
            msg.paths.extend(draw(st.lists(st.sampled_from(known), max_size=2, unique=True)))  # type: ignore[attr-defined]


def _benign_scalar(fd: Field, owner: MessageType, names: Names) -> st.SearchStrategy[Any]:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        kinds = _kinds_for(owner, fd.name)
        existing = [n for kind in kinds or () for n in names.of(kind)]
        if kinds == ("users",):  # the caller itself, most of the time
            return st.one_of(st.just("users/me"), st.sampled_from([*existing, "users/me"]))
        if existing:
            return st.sampled_from(existing)
        plausible = {
            "email": names.of("emails"),
            "type": ("noop",),
            "types": ("noop",),
            "permission": ("files.read",),
            "action": ("files.read",),
            "content_type": ("text/plain",),
            "content_type_prefix": ("text/",),
            "version_id": names.of("versions"),
            "lease_id": names.of("leases"),
            "password": ("a perfectly fine passphrase",),
            "page_token": ("",),  # anything else is an invalid token
        }.get(fd.name)
        return st.sampled_from(list(plausible)) if plausible else SIMPLE_TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(min_size=1, max_size=32)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.integers(0, 100).map(float)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values if v.number != 0]
        return st.sampled_from(known or [0])
    return st.integers(0, 10)


def _scalar(
    fd: Field, owner: MessageType, names: Names, hostile: bool = True
) -> st.SearchStrategy[Any]:
    if not hostile:
        return _benign_scalar(fd, owner, names)
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return strings_for(owner, fd.name, names)
    if t == FieldDescriptor.TYPE_BYTES:
        return binaries()
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return doubles(64)
    if t == FieldDescriptor.TYPE_FLOAT:
        return doubles(32)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from(known), integers(INT32))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return integers(UINT32)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return integers(UINT64)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return integers(INT64)
    return integers(INT32)


def _is_map(fd: Field) -> bool:
    return bool(fd.message_type is not None and fd.message_type.GetOptions().map_entry)


def _is_repeated(fd: Field) -> bool:
    # protobuf 5+ has ``is_repeated``; older releases only ``label``.
    repeated = getattr(fd, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


@st.composite
def _fill(
    draw: Callable[..., Any], msg: Message, names: Names, depth: int, hostile: bool = True
) -> Message:
    descriptor = msg.DESCRIPTOR
    unset: list[str | None] = [None] if hostile else []
    chosen_oneofs = {
        oneof.name: draw(st.sampled_from([*unset, *[f.name for f in oneof.fields]]))
        for oneof in descriptor.oneofs
    }
    for fd in descriptor.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            if chosen_oneofs[oneof.name] != fd.name:
                continue
        elif not draw(st.booleans() if hostile else st.integers(0, 4).map(bool)):
            continue
        _set_field(draw, msg, fd, names, depth, hostile)
    return msg


def _set_field(
    draw: Callable[..., Any],
    msg: Message,
    fd: Field,
    names: Names,
    depth: int,
    hostile: bool = True,
) -> None:
    owner = msg.DESCRIPTOR
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        container = getattr(msg, fd.name)
        for key in draw(st.lists(_scalar(key_fd, owner, names, hostile), max_size=3)):
            if value_fd.message_type is not None:
                _fill_message(draw, container[key], names, depth + 1, owner, hostile)
            else:
                container[key] = draw(_scalar(value_fd, owner, names, hostile))
        return
    if _is_repeated(fd):
        container = getattr(msg, fd.name)
        counts = (
            st.one_of(st.integers(0, 3), st.sampled_from([0, 1, 2, 3, 50]))
            if hostile
            else st.integers(1, 2)
        )
        count = draw(counts)
        if fd.message_type is not None:
            count = min(count, 3)
            for _ in range(count):
                _fill_message(draw, container.add(), names, depth + 1, owner, hostile)
        else:
            item = _scalar(fd, owner, names, hostile)
            if count > 3:  # many copies of one short value: count limits, duplicates
                if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                    item = strings_for(owner, fd.name, names).filter(lambda v: len(v) < 64)
                    if fd.type == FieldDescriptor.TYPE_BYTES:
                        item = st.binary(max_size=16)
                container.extend([draw(item)] * count)
            else:
                container.extend(draw(st.lists(item, min_size=count, max_size=count)))
        return
    if fd.message_type is not None:
        _fill_message(draw, getattr(msg, fd.name), names, depth + 1, owner, hostile)
        return
    setattr(msg, fd.name, draw(_scalar(fd, owner, names, hostile)))


def _fill_message(
    draw: Callable[..., Any],
    msg: Message,
    names: Names,
    depth: int,
    parent: MessageType,
    hostile: bool = True,
) -> None:
    msg.SetInParent()
    if _fill_wkt(draw, msg, parent, hostile):
        return
    if depth > MAX_DEPTH:
        return
    draw(_fill(msg, names, depth, hostile))


MAX_DEPTH = 3


def string_paths(
    descriptor: MessageType, depth: int = 0, prefix: tuple[Field, ...] = ()
) -> list[tuple[Field, ...]]:
    """Every path (of field descriptors) from ``descriptor`` to a string field, depth-bounded."""
    paths: list[tuple[Field, ...]] = []
    for fd in descriptor.fields:
        path = (*prefix, fd)
        if fd.type == FieldDescriptor.TYPE_STRING:
            paths.append(path)
        elif fd.message_type is not None and depth < MAX_DEPTH:
            paths.extend(string_paths(fd.message_type, depth + 1, path))
    return paths


def target_paths(
    descriptor: MessageType, depth: int = 0, prefix: tuple[Field, ...] = ()
) -> list[tuple[Field, ...]]:
    """Paths to every field one hostile value can go in: scalars, maps, well-known types."""
    paths: list[tuple[Field, ...]] = []
    for fd in descriptor.fields:
        path = (*prefix, fd)
        nested = fd.message_type
        if nested is None or _is_map(fd) or nested.full_name in WELL_KNOWN:
            paths.append(path)
        elif depth < MAX_DEPTH:
            paths.extend(target_paths(nested, depth + 1, path))
    return paths


def _set_at(
    draw: Callable[..., Any], msg: Message, path: Sequence[Field], names: Names, depth: int
) -> None:
    """Put a hostile value in the field at ``path``, creating the messages on the way."""
    fd = path[0]
    if len(path) == 1 and fd.type == FieldDescriptor.TYPE_STRING:
        # A NUL inside an otherwise ordinary value is the case databases choke on.
        plausible = _benign_scalar(fd, msg.DESCRIPTOR, names)
        value = draw(
            st.one_of(
                st.builds(lambda a, b: f"{a}\x00{b}", plausible, SIMPLE_TEXT),
                strings_for(msg.DESCRIPTOR, fd.name, names),
            )
        )
        if _is_repeated(fd):
            getattr(msg, fd.name).append(value)
        else:
            setattr(msg, fd.name, value)
        return
    if len(path) == 1:
        if fd.message_type is not None or not _is_repeated(fd):
            msg.ClearField(fd.name)
            _set_field(draw, msg, fd, names, depth, hostile=True)
        else:
            getattr(msg, fd.name).append(draw(_scalar(fd, msg.DESCRIPTOR, names)))
        return
    if _is_repeated(fd):
        container = getattr(msg, fd.name)
        child = container[0] if len(container) else container.add()
    else:
        child = getattr(msg, fd.name)
        child.SetInParent()
    _set_at(draw, child, path[1:], names, depth + 1)


def _tag(fd: Field, wire_type: int) -> bytes:
    return encode_varint((fd.number << 3) | wire_type)


def encode_at(path: Sequence[Field], payload: bytes) -> bytes:
    """The wire bytes that put ``payload`` in the length-delimited field at ``path``."""
    data = payload
    for fd in reversed(path):
        data = _tag(fd, 2) + encode_varint(len(data)) + data
    return data


def path_name(path: Sequence[Field]) -> str:
    return ".".join(fd.name for fd in path)


def _message_class(descriptor: MessageType) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _inject(draw: Callable[..., Any], paths: Sequence[tuple[Field, ...]]) -> tuple[str, bytes]:
    path = draw(st.sampled_from(paths))
    return path_name(path), encode_at(path, draw(st.sampled_from(INVALID_UTF8)))


@st.composite
def requests(
    draw: Callable[..., Any], descriptor: MessageType, names: Names = Names()
) -> WireRequest:
    """A hostile request of type ``descriptor`` (see the module docstring).

    Half of them are wild (every field may be hostile); the other half are ordinary, valid
    looking requests with ONE hostile field, which gets past the checks of the other fields
    and reaches the code (and the database) behind them.
    """
    msg = _message_class(descriptor)()
    targets = target_paths(descriptor)
    paths = string_paths(descriptor)
    injected = None
    trailing = b""
    if targets and draw(st.booleans()):
        draw(_fill(msg, names, 0, hostile=False))
        if paths and draw(st.integers(0, 6)) == 0:  # the hostile part: invalid UTF-8 …
            injected = _inject(draw, paths)
        else:  # … or one hostile value
            _set_at(draw, msg, draw(st.sampled_from(targets)), names, 0)
        return WireRequest(msg, injected)
    draw(_fill(msg, names, 0))
    if paths and draw(st.integers(0, 5)) == 0:
        injected = _inject(draw, paths)
    if draw(st.integers(0, 19)) == 0:
        trailing = draw(
            st.one_of(
                st.binary(min_size=1, max_size=16),
                st.just(encode_varint((999 << 3) | 2) + encode_varint(3) + b"abc"),  # unknown
                st.just(encode_varint((1 << 3) | 2) + encode_varint(1000)),  # cut short
            )
        )
    return WireRequest(msg, injected, trailing)
