"""``Violations``: every bad field reported once, in the order the handler found it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import FieldViolation, InvalidArgument, OutOfRange, Violations

violations = st.builds(
    FieldViolation,
    field=st.text(min_size=1, max_size=20),
    description=st.text(min_size=1, max_size=40),
)
# One step of a handler: add one field, extend with a validator's list, or run a validator
# that either returns a value or raises InvalidArgument with some violations.
steps = st.one_of(
    st.tuples(st.just("add"), violations),
    st.tuples(st.just("extend"), st.lists(violations, max_size=3)),
    st.tuples(st.just("check_ok"), st.integers()),
    st.tuples(st.just("check_bad"), st.lists(violations, max_size=3)),
)
reasons = st.none() | st.from_regex(r"\A[A-Z][A-Z0-9_]{0,20}[A-Z0-9]\Z")


def run(found: Violations, step: tuple[str, object]) -> list[FieldViolation]:
    """Applies one step and returns the violations it should have added."""
    kind, value = step
    if kind == "add":
        assert isinstance(value, FieldViolation)
        found.add(value.field, value.description)
        return [value]
    if kind == "extend":
        assert isinstance(value, list)
        found.extend(value)
        return value
    if kind == "check_ok":
        assert isinstance(value, int)
        assert found.check(lambda: value, "default") == value
        return []
    assert isinstance(value, list)
    bad = value

    def fail() -> int:
        raise InvalidArgument(reason="SOME_OTHER_REASON", violations=bad)

    assert found.check(fail, "default") == "default"
    return bad


@given(st.lists(steps, max_size=12), reasons, st.none() | st.integers(0, 10))
def test_raises_what_was_found_in_order(
    plan: list[tuple[str, object]], reason: str | None, limit: int | None
) -> None:
    found = Violations()
    expected = [v for step in plan for v in run(found, step)]
    assert list(found) == expected
    assert len(found) == len(expected)
    assert bool(found) == bool(expected)
    if not expected:
        found.raise_if_any(reason, limit=limit)  # nothing found: nothing raised
        return
    with pytest.raises(InvalidArgument) as raised:
        found.raise_if_any(reason, limit=limit)
    kept = expected[:limit]
    assert type(raised.value) is InvalidArgument
    assert list(raised.value.violations) == kept
    assert raised.value.reason == (reason or "INVALID_ARGUMENT")
    # The same error a handler built by hand before the collector existed.
    by_hand = InvalidArgument(reason=reason, violations=kept)
    assert raised.value.message == by_hand.message


def test_check_keeps_subclass_violations_and_lets_other_errors_through() -> None:
    found = Violations()

    def out_of_range() -> int:
        raise OutOfRange(violations=[FieldViolation("page_size", "must not be negative")])

    assert found.check(out_of_range) is None
    assert list(found) == [FieldViolation("page_size", "must not be negative")]
    with pytest.raises(ZeroDivisionError):
        found.check(lambda: 1 // 0)
    assert len(found) == 1
