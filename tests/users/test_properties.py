"""Property tests: validators and resource patterns (page tokens: tests/common)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.auth import allows, pattern_matches
from common.context import Principal
from common.errors import InvalidArgument
from services.users import permissions, validation
from tests.support.hypo import relaxed

local_parts = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s
)
domains = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|org|net|io)", fullmatch=True)


@given(local=local_parts, domain=domains)
def test_wellformed_emails_are_accepted_and_normalized(local: str, domain: str) -> None:
    address = f"{local}@{domain.upper()}"
    clean = validation.email(address)
    assert clean.endswith("@" + domain)  # the domain is lowercased
    assert validation.email(clean) == clean  # idempotent


@given(text=st.text(max_size=80))
def test_email_validator_never_crashes_and_rejects_without_at(text: str) -> None:
    try:
        clean = validation.email(text)
    except InvalidArgument as exc:
        assert [v.field for v in exc.violations] == ["email"]
    else:
        assert "@" in clean and len(clean) <= validation.MAX_EMAIL_LENGTH


@given(text=st.text(max_size=300))
def test_password_policy_is_total_and_consistent(text: str) -> None:
    problem = validation.password_problem(text, min_length=12, email_address="someone@example.com")
    if len(text) < 12 or len(text) > validation.MAX_PASSWORD_LENGTH:
        assert problem is not None
    if problem is None:
        assert 12 <= len(text) <= validation.MAX_PASSWORD_LENGTH
        assert len(set(text)) >= validation.MIN_DISTINCT_PASSWORD_CHARS
        assert "\x00" not in text


@given(
    text=st.text(
        alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=12, max_size=64
    )
)
def test_varied_printable_passwords_pass_the_policy(text: str) -> None:
    if len(set(text)) >= validation.MIN_DISTINCT_PASSWORD_CHARS:
        assert validation.password_problem(text, min_length=12) is None


segment = st.from_regex(r"[A-Za-z0-9._~-]{1,8}", fullmatch=True)
resource_names = st.lists(segment, min_size=1, max_size=4).map(
    lambda parts: "files/" + "/".join(parts)
)


@given(name=resource_names)
@relaxed(max_examples=200)
def test_patterns_match_as_documented(name: str) -> None:
    assert pattern_matches("*", name)
    assert pattern_matches(name, name)
    assert pattern_matches("files/*", name)
    assert not pattern_matches("jobs/*", name)
    assert not pattern_matches(name + "/*", name)  # a prefix never matches itself
    assert permissions.is_valid_pattern(name) and permissions.is_valid_pattern(name + "/*")


@given(text=st.text(max_size=60))
def test_invalid_patterns_are_rejected(text: str) -> None:
    if permissions.is_valid_pattern(text):
        assert "*" not in text[:-1] or text == "*"
        assert " " not in text and "'" not in text


roles = st.sampled_from(["admin", "user", "service"])
vocabulary = st.sampled_from(sorted(permissions.VOCABULARY))
grant_entries = st.lists(
    st.tuples(vocabulary, st.sampled_from(["*", "files/*", "files/a", "jobs/*", "users/u1/x"])).map(
        lambda pair: f"{pair[0]}:{pair[1]}"
    ),
    max_size=4,
)
resources = st.sampled_from(["files/a", "files/b", "jobs/j", "users/u1", "users/u1/x", "users/u2"])


@given(
    role=roles,
    grants=grant_entries,
    permission=vocabulary,
    resource=resources,
    owner=st.sampled_from([None, "users/u1", "users/u2"]),
)
def test_local_rule_agrees_with_check_permission(
    role: str, grants: list[str], permission: str, resource: str, owner: str | None
) -> None:
    held = permissions.effective_permissions(role, grants)  # type: ignore[arg-type]
    principal = Principal(name="users/u1", user_id="u1", role=role, permissions=held)  # type: ignore[arg-type]
    decision = permissions.decide(
        principal_name="users/u1",
        role=role,
        permissions=held,
        permission=permission,
        resource=resource,
        owner=owner,  # type: ignore[arg-type]
    )
    assert allows(principal, permission, resource, owner=owner) == (decision != "DENIED")
    if (
        role == "user"
        and permission in permissions.USER_DEFAULTS
        and resource.startswith("users/u1")
    ):
        assert decision in ("OWNER", "GRANT")
    if (
        role == "user"
        and not grants
        and resource.startswith(("files/", "jobs/"))
        and owner != "users/u1"
    ):
        assert decision == "DENIED"


@given(
    action=st.text(max_size=20),
    resource=st.text(max_size=20),
    metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3),
    corrupt=st.sampled_from([None, "action", "resource", "metadata"]),
)
def test_wire_walker_finds_the_field_with_invalid_utf8(
    action: str, resource: str, metadata: dict[str, str], corrupt: str | None
) -> None:
    from mediagrid.users.v1 import user_service_pb2 as pb

    from common.wire_format import invalid_utf8_field

    message = pb.RecordActivityRequest(action=action, resource=resource, metadata=metadata)
    raw = message.SerializeToString()
    assert invalid_utf8_field(raw, pb.RecordActivityRequest.DESCRIPTOR) is None
    if corrupt is None:
        return
    marker = "\x01MARKER\x01"  # replaced below by as many bytes, so framing stays intact
    if corrupt == "metadata":
        message.metadata["k"] = marker
    else:
        setattr(message, corrupt, marker)
    raw = message.SerializeToString().replace(marker.encode(), b"\x01\xffARKER\x01")
    assert invalid_utf8_field(raw, pb.RecordActivityRequest.DESCRIPTOR) == corrupt
