"""Property tests for the validators (page tokens: tests/common/test_pagination.py)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from services.files import keys, validation


@given(st.text(max_size=1200))
def test_display_names_accepted_are_safe(name: str) -> None:
    try:
        accepted = validation.display_name(name)
    except InvalidArgument as exc:
        assert exc.reason == "INVALID_DISPLAY_NAME"
        return
    assert accepted == name
    assert 0 < len(name.encode()) <= validation.MAX_DISPLAY_NAME_BYTES
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name)
    assert ".." not in name.replace("\\", "/").split("/")
    assert not name.startswith(("/", "\\"))


@given(st.text(max_size=300))
def test_content_type_is_normalised_or_refused(value: str) -> None:
    try:
        normalised = validation.content_type(value)
    except InvalidArgument as exc:
        assert exc.reason == "INVALID_CONTENT_TYPE"
        return
    assert normalised == validation.content_type(normalised)  # idempotent
    assert normalised.count("/") == 1 and normalised == normalised.lower()


# Names that can be valid, near misses around them, and arbitrary text: random text alone
# almost never matches a name pattern, so the accepting branch would never run.
_ids = st.one_of(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", fullmatch=True),
    st.text(max_size=40),
)
_names = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda prefix, ident, suffix: prefix + ident + suffix,
        st.sampled_from(["files/", "uploads/", "users/", "users/../", "files//", "/files/", ""]),
        _ids,
        st.sampled_from(["", "/", "/..", "/x", " ", "\n"]),
    ),
)


@given(_names)
def test_names_never_escape_their_prefix(text: str) -> None:
    for parse, prefix in (
        (validation.file_id, "files/"),
        (validation.upload_id, "uploads/"),
        (validation.user_id, "users/"),
    ):
        try:
            ident = parse(text)
        except InvalidArgument as exc:
            assert exc.violations  # names the offending field
            continue
        assert "/" not in ident and ".." not in ident
        assert text == prefix + ident  # the id is exactly what follows the prefix
    try:
        owner = validation.user_id(text)
    except InvalidArgument:
        return
    file_id = keys.new_id()
    assert keys.content_key(owner, file_id).startswith(f"users/{owner}/{file_id}/")


@pytest.mark.parametrize(
    ("declared", "head", "ok"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n....", True),
        ("image/png", b"GIF89a", False),
        ("video/mp4", b"\x00\x00\x00\x18ftypmp42", True),
        ("text/plain", b"\x00\x01", True),
        ("image/png", b"", True),
    ],
)
def test_content_sniffing(declared: str, head: bytes, ok: bool) -> None:
    assert validation.content_matches(declared, head) is ok


@given(st.binary(max_size=5000))
def test_upload_data_fast_path_matches_protobuf(data: bytes) -> None:
    from mediagrid.files.v1 import file_pb2, file_service_pb2

    from services.files.wire import parse_upload_request

    raw = file_service_pb2.UploadRequest(data=data).SerializeToString()
    parsed = parse_upload_request(raw)
    assert isinstance(parsed, memoryview) and bytes(parsed) == data
    header = file_service_pb2.UploadRequest(header=file_pb2.UploadHeader(display_name="x"))
    assert parse_upload_request(header.SerializeToString()) == header
    # Two data fields (the last wins in protobuf) are not the simple shape: full parse.
    doubled = parse_upload_request(raw + raw)
    assert isinstance(doubled, file_service_pb2.UploadRequest) and doubled.data == data


def _download_response_or_error(raw: bytes) -> object:
    from google.protobuf.message import DecodeError
    from mediagrid.files.v1 import file_service_pb2

    try:
        return file_service_pb2.DownloadResponse.FromString(raw)
    except DecodeError:
        return DecodeError


@given(
    st.binary(max_size=5000),
    st.one_of(st.none(), st.text(max_size=50)),
    st.integers(min_value=0, max_value=2**62),
)
def test_download_data_fast_path_matches_protobuf(
    data: bytes, file_name: str | None, size: int
) -> None:
    """The client's deserializer agrees with protobuf's over any DownloadResponse: data-only
    messages as a memoryview of the same bytes, every other message parsed alike."""
    from mediagrid.files.v1 import file_pb2, file_service_pb2

    from services.files.wire import parse_download_response

    message = file_service_pb2.DownloadResponse(data=data)
    if file_name is not None:
        message.file.CopyFrom(file_pb2.File(name=file_name, size_bytes=size))
    raw = message.SerializeToString()
    parsed = parse_download_response(raw)
    if isinstance(parsed, memoryview):
        assert file_name is None and data and bytes(parsed) == data
    else:
        assert parsed == message
        assert file_name is not None or not data
    # Two data fields (the last wins in protobuf) are not the simple shape: full parse.
    if data:
        doubled = parse_download_response(raw + raw)
        assert isinstance(doubled, file_service_pb2.DownloadResponse) and doubled.data == data


@given(st.binary(max_size=300))
def test_download_deserializer_matches_protobuf_on_any_bytes(raw: bytes) -> None:
    """Arbitrary bytes: a memoryview only where protobuf reads a data-only message with
    exactly those bytes; otherwise protobuf's own result (or its error)."""
    from google.protobuf.message import DecodeError

    from services.files.wire import parse_download_response

    expected = _download_response_or_error(raw)
    try:
        parsed = parse_download_response(raw)
    except DecodeError:
        assert expected is DecodeError
        return
    if isinstance(parsed, memoryview):
        assert expected is not DecodeError
        assert not expected.HasField("file") and expected.data == bytes(parsed)  # type: ignore[attr-defined]
        assert not expected.UnknownFields()  # type: ignore[attr-defined]
    else:
        assert parsed == expected


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=1, max_value=9))
def test_download_deserializer_overlong_length_varint(data: bytes, padding: int) -> None:
    """A length written as an overlong varint (legal protobuf) still reads the same bytes."""
    from services.files.wire import parse_download_response

    length = len(data)
    groups = []
    for _ in range(padding):
        groups.append((length & 0x7F) | 0x80)
        length >>= 7
    groups.append(length & 0x7F)
    raw = bytes([0x12, *groups]) + data
    from google.protobuf.message import DecodeError

    expected = _download_response_or_error(raw)
    try:
        parsed = parse_download_response(raw)
    except DecodeError:
        assert expected is DecodeError
        return
    if isinstance(parsed, memoryview):
        assert bytes(parsed) == data == expected.data  # type: ignore[attr-defined]
    else:
        assert parsed == expected
