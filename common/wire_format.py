"""The protobuf wire format by hand: varints, and what a failed parse does not tell.

The parser only says that a request did not decode. A ``string`` field holding invalid
UTF-8 is the common case from clients in other languages; ``invalid_utf8_field`` walks the
raw bytes against the message's descriptor and names the field, so the caller gets an
INVALID_ARGUMENT with that field instead of "the request could not be parsed".
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; IndexError when it is cut short."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IndexError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


# Deeper messages are not walked: protobuf's parser refuses them anyway, and a recursive
# walk of a hostile message nested 10,000 levels would exhaust Python's stack.
MAX_WALK_DEPTH = 100


def length_delimited_fields(
    data: bytes | memoryview,
) -> Iterator[tuple[int, bytes | memoryview]]:
    """(field number, bytes) of each length-delimited field; scalars are skipped.

    IndexError when the data is cut short or uses groups (which the suite never sends).
    """
    pos, size = 0, len(data)
    while pos < size:
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            if pos + length > size:
                raise IndexError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise IndexError("groups are not walked")


def invalid_utf8_field(
    data: bytes | memoryview, descriptor: Descriptor, prefix: str = "", depth: int = 0
) -> str | None:
    """The path (``metadata``, ``user.email``) of the first string field that is not UTF-8."""
    if depth > MAX_WALK_DEPTH:
        return None
    try:
        for number, chunk in length_delimited_fields(data):
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = f"{prefix}{field.name}"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    bytes(chunk).decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
                if field.message_type.GetOptions().map_entry:
                    if invalid_utf8_field(chunk, field.message_type, "", depth + 1) is not None:
                        return path
                else:
                    inner = invalid_utf8_field(chunk, field.message_type, f"{path}.", depth + 1)
                    if inner is not None:
                        return inner
    except IndexError:
        return None
    return None


def encode_varint(value: int) -> bytes:
    """``value`` (non-negative) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
