"""Property: raise any domain error in a handler, call it over a real channel, and
``from_rpc_error`` gives back an equal exception (class, message, reason, metadata,
violations, retry delay; domain = the service's or the one the error carried)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from common import errors
from common.grpc_errors import CODES, from_rpc_error
from tests.support.hypo import relaxed
from tests.support.rpc import demo_service, method, serving, unary

SERVICE = "mediagrid.jobs.v1.RoundTripService"

reasons = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,20}[A-Z0-9]\Z")
# Within the size budget of common.grpc_errors (at most 4 bytes per character).
metadata = st.dictionaries(st.text(min_size=1, max_size=15), st.text(max_size=40), max_size=4)
violations = st.lists(
    st.builds(errors.FieldViolation, st.text(min_size=1, max_size=20), st.text(max_size=40)),
    max_size=4,
)


@st.composite
def domain_errors(draw: st.DrawFn) -> errors.DomainError:
    cls = draw(st.sampled_from(sorted(CODES, key=lambda c: c.__name__)))
    kwargs: dict[str, Any] = {
        "reason": draw(st.none() | reasons),
        "metadata": draw(metadata),
        "domain": draw(st.none() | st.sampled_from(["users.mediagrid", "files.mediagrid"])),
    }
    if issubclass(cls, errors.InvalidArgument):
        kwargs["violations"] = draw(violations)
    if issubclass(cls, errors.ResourceExhausted):
        kwargs["retry_after_seconds"] = draw(
            st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
        )
    message = draw(st.none() | st.text(min_size=1, max_size=200))
    return cls(message, **kwargs)


class Slot:
    exc: BaseException = RuntimeError("unset")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async def raise_slot(request: bytes, context: Any) -> bytes:
        raise Slot.exc

    async with serving(demo_service({"Raise": unary(raise_slot)}, service=SERVICE)) as (_, ch):
        yield ch


@pytest.mark.asyncio(loop_scope="module")
@relaxed(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exc=domain_errors())
async def test_round_trip(channel: grpc.aio.Channel, exc: errors.DomainError) -> None:
    Slot.exc = exc
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(method("Raise", SERVICE))(b"")
    back = from_rpc_error(caught.value)
    assert type(back) is type(exc)
    assert back.message == exc.message
    assert back.reason == exc.reason
    assert back.metadata == exc.metadata
    assert back.domain == (exc.domain or "jobs.mediagrid")
    if isinstance(exc, errors.InvalidArgument):
        assert isinstance(back, errors.InvalidArgument)
        assert back.violations == exc.violations
    if isinstance(exc, errors.ResourceExhausted):
        assert isinstance(back, errors.ResourceExhausted)
        if exc.retry_after_seconds is None:
            assert back.retry_after_seconds is None
        else:
            assert back.retry_after_seconds is not None
            assert math.isclose(back.retry_after_seconds, exc.retry_after_seconds, abs_tol=1e-9)


@relaxed(max_examples=200)
@given(exc=domain_errors())
def test_repr_and_str_name_the_error(exc: errors.DomainError) -> None:
    assert str(exc) == exc.message
    assert type(exc).__name__ in repr(exc) and exc.reason in repr(exc)
