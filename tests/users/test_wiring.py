"""A service in another process than users gets the remote authenticator and recorder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from common import registry
from common.app import AppContext, ServiceInstance
from common.auth import CachingAuthenticator, RemoteActivityRecorder
from common.context import Principal, current_principal_var
from common.runtime import running_suite
from tests.users.conftest import start_users


async def bare_factory(ctx: AppContext) -> ServiceInstance:
    """A service with no RPCs, standing in for jobs or files."""
    return ServiceInstance(name="bare", service_names=[], register=lambda server: None)


async def test_runtime_wires_remote_auth_and_activity(
    suite: Callable[..., Any], password_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = await start_users(suite, password_hash)
    user, token = await users.user_with_token()
    monkeypatch.setitem(
        registry.SERVICES, "bare", registry.ServiceSpec("bare", "bare", f"{__name__}:bare_factory")
    )
    settings = users.settings.model_copy(update={"users_address": users.server.address})
    async with running_suite(settings, ["bare"], port=0) as (_, ctx):
        assert isinstance(ctx.authenticator, CachingAuthenticator)
        assert isinstance(ctx.activity, RemoteActivityRecorder)
        principal = await ctx.authenticator.authenticate(token)
        assert principal.name == user.name
        reset = current_principal_var.set(principal.model_copy(update={"token": token}))
        try:
            await ctx.activity.record("files.create", "files/remote", {"via": "bare"})
        finally:
            current_principal_var.reset(reset)
    entries = await users.repository.list_activity(
        actor_id=user.id,
        action="files.create",
        action_prefix=None,
        start=None,
        end=None,
        before_id=None,
        limit=5,
    )
    assert [(e.resource, e.metadata) for e in entries] == [("files/remote", {"via": "bare"})]
    assert isinstance(principal, Principal)


async def _whoami(request: bytes, context: Any) -> Any:
    from common.context import current_principal

    for _ in range(2):
        yield current_principal().name.encode()


def _register_stream(server: Any) -> None:
    import grpc

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Stream", {"WhoAmI": grpc.unary_stream_rpc_method_handler(_whoami)}
            ),
        )
    )


async def test_streaming_calls_are_authenticated_by_the_users_authenticator(
    suite: Callable[..., Any], password_hash: str
) -> None:
    import grpc

    from common.server import SuiteServer

    users = await start_users(suite, password_hash)
    user, token = await users.user_with_token()
    instance = ServiceInstance(name="stream", service_names=[], register=_register_stream)
    server = SuiteServer(users.settings, [instance], authenticator=users.ctx.authenticator)
    await server.start(0)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = channel.unary_stream("/test.Stream/WhoAmI")
            replies = [r async for r in call(b"", metadata=(("authorization", f"Bearer {token}"),))]
            assert replies == [user.name.encode()] * 2
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [r async for r in call(b"")]
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await users.repository.update_user(user.id, status="disabled", revoke_sessions=True)
            users.ctx.authenticator.clear()  # as if the cache TTL had passed
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [r async for r in call(b"", metadata=(("authorization", f"Bearer {token}"),))]
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)
